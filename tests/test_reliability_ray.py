"""Faults inside a running sweep on a real local Ray (2 CPUs), with the real trainer on the bundled slides.

One sweep of three arms runs once per module while a watcher thread injects the faults:

* ``killed``: its trial worker process (the Ray actor) gets SIGKILL after its first checkpoints;
  Ray restarts it (``max_failures``) and it must continue from its last checkpoint to the same final step;
* ``nan``: an absurd learning rate without gradient clipping makes the loss non-finite; the trial must
  stop with a clear error and be marked ERROR while the others finish;
* ``ok``: untouched.

Then ``results.parquet`` must hold every (trial, step, metric) exactly once, and several concurrent
``pathfm sweep collect`` processes on the same folder must leave a valid, identical file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 12
FAST = {  # the smoke preset, shortened
    "data.assume_mpp": 0.5, "optim.steps": STEPS, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
    "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256,
}
NAN_ARM = {"optim.base_lr": 1e30, "optim.clip_grad": None}  # diverges to a NaN loss at step 3


def _trial_pids(trial_dir_name: str) -> list[int]:
    """Ray worker processes running this trial: Tune runs each trial actor in a working directory named
    after the trial folder (``.../working_dirs/trial_<id>``)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cwd = os.readlink(p / "cwd")
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if Path(cwd).name == trial_dir_name and cmd.startswith(b"ray::"):
            pids.append(int(p.name))
    return pids


class Killer(threading.Thread):
    """Waits until the trial of arm ``arm`` has a checkpoint at ``at_step`` and is still training, then
    SIGKILLs its worker process (once)."""

    def __init__(self, storage: Path, name: str, arm: str, at_step: int):
        super().__init__(daemon=True)
        self.sweep_dir, self.arm, self.at_step = storage / name, arm, at_step
        self.killed: dict | None = None
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.time() + 240
        while not self.stop.is_set() and time.time() < deadline:
            for d in SweepFolder(self.sweep_dir).trial_dirs() if self.sweep_dir.exists() else []:
                info = read_trial(d) or {}
                if info.get("arm") != self.arm:
                    continue
                if (d / "DONE").exists():
                    self.error = "the trial finished before it could be killed"
                    return
                if not (d / "checkpoints" / f"step_{self.at_step:08d}.pt.sha256").exists():
                    continue
                pids = _trial_pids(d.name)
                if not pids:
                    continue
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                steps = [r["step"] for r in read_jsonl(d / "metrics.jsonl")]
                self.killed = {"pids": pids, "last_logged_step": max(steps, default=0), "dir": d}
                return
            time.sleep(0.05)
        self.error = self.error or "timed out waiting for the trial to checkpoint"


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory):
    import ray

    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    storage = tmp_path_factory.mktemp("reliability_sweeps")
    spec = spec_from_dict({
        "name": "faults", "overrides": dict(FAST),
        "arms": [{"name": "ok"}, {"name": "killed"}, {"name": "nan", "overrides": NAN_ARM}],
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
        "report_every": 1, "max_concurrent_trials": 2, "max_failures": 1,
    })
    killer = Killer(storage, "faults", "killed", at_step=4)
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    try:
        killer.start()
        sweep_dir = run_sweep(spec, storage=storage, verbose=0)
    finally:
        killer.stop.set()
        ray.shutdown()
    killer.join(5)
    trials = {(read_trial(d) or {}).get("arm"): dict(read_trial(d), dir=d) for d in SweepFolder(sweep_dir).trial_dirs()}
    return {"dir": sweep_dir, "trials": trials, "killer": killer}


def test_sigkilled_trial_worker_restarts_from_its_last_checkpoint(faulty_sweep):
    killer = faulty_sweep["killer"]
    assert killer.error is None and killer.killed, killer.error
    t = faulty_sweep["trials"]["killed"]
    assert t["status"] == "TERMINATED", t.get("error")
    assert t["attempts"] == 2  # one restart by Ray
    # it continued from a checkpoint written before the kill, not from step 0 ...
    assert 4 <= t["restored_from_step"] <= killer.killed["last_logged_step"] < STEPS
    # ... to the same final step, and every step is logged exactly once (the lost steps re-trained once)
    steps = [r["step"] for r in read_jsonl(t["dir"] / "metrics.jsonl")]
    assert steps == list(range(1, STEPS + 1))
    assert t["final_step"] == STEPS and (t["dir"] / "DONE").read_text().startswith(f"finished at step {STEPS}")
    from pathfm.backbone import checkpoint as ckpt

    path, state = ckpt.latest_valid(t["dir"])
    assert state["progress"]["global_step"] == STEPS and ckpt.verify(path) is None
    assert not list((t["dir"] / "checkpoints").glob(".*.tmp"))  # no half-written checkpoint left behind


def test_non_finite_loss_errors_its_trial_while_the_others_finish(faulty_sweep):
    trials = faulty_sweep["trials"]
    bad = trials["nan"]
    assert bad["status"] == "ERROR"
    assert "NonFiniteLossError" in bad["error"] and "is nan at step 3" in bad["error"]
    assert "Lower the lr" in bad["error"]  # says what to do
    assert not (bad["dir"] / "DONE").exists()
    from pathfm.backbone import checkpoint as ckpt

    assert [s for s, _ in ckpt.list_checkpoints(bad["dir"])] == [2]  # nothing saved for the NaN step
    assert trials["ok"]["status"] == "TERMINATED" and trials["ok"]["final_step"] == STEPS
    df = pl.read_parquet(faulty_sweep["dir"] / "results.parquet")
    status = dict(df.select("arm", "status").unique().iter_rows())
    assert status == {"ok": "TERMINATED", "killed": "TERMINATED", "nan": "ERROR"}


def test_results_hold_every_metric_row_exactly_once(faulty_sweep):
    df = pl.read_parquet(faulty_sweep["dir"] / "results.parquet")
    key = ["trial_id", "kind", "step", "final", "task", "probe", "backbone", "fold", "metric"]
    dup = df.group_by(key).len().filter(pl.col("len") > 1)
    assert dup.height == 0, dup
    train = df.filter((pl.col("kind") == "train") & (pl.col("metric") == "loss"))
    for arm, last in (("ok", STEPS), ("killed", STEPS), ("nan", 2)):
        steps = sorted(train.filter(pl.col("arm") == arm)["step"].to_list())
        # the NaN trial keeps what it logged before the failing step (steps 1-2; step 3 was never logged)
        assert steps == list(range(1, last + 1)), (arm, steps)
    final = train.filter(pl.col("final"))
    assert sorted(final["arm"].to_list()) == ["killed", "nan", "ok"]  # one final row per trial
    # a killed-and-restarted trial has the same rows as an untouched one
    ok = train.filter(pl.col("arm") == "ok").select("step", "tiles_seen").sort("step")
    killed = train.filter(pl.col("arm") == "killed").select("step", "tiles_seen").sort("step")
    assert ok.equals(killed)


def _collect_cli(sweep_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.Popen([sys.executable, "-m", "pathfm.cli", "sweep", "collect", str(sweep_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_collect_processes_leave_one_valid_identical_file(faulty_sweep):
    sweep_dir = faulty_sweep["dir"]
    out = sweep_dir / "results.parquet"
    before = pl.read_parquet(out)
    procs = [_collect_cli(sweep_dir) for _ in range(4)]
    reads = 0
    while any(p.poll() is None for p in procs):
        if out.exists():
            assert pl.read_parquet(out).equals(before)  # readers never see a half-written file
            reads += 1
        time.sleep(0.02)
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err[-2000:]
    assert reads > 0
    assert pl.read_parquet(out).equals(before)  # idempotent: rebuilt from the trial folders, same content
    assert not list(sweep_dir.glob(".results.parquet.*"))  # no temp files left
