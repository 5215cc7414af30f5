"""The driver of an Optuna sweep on an object store is SIGKILLed and its node lost (a head/login-node crash, no
chance to save anything; its local staging folder deleted), and ``pathfm sweep resume URI`` completes the sweep
from what the store holds: the finished trial is not re-run, the interrupted one continues from its
checkpoint, and the Optuna searcher continues from its saved state (the study's trial budget is kept and no
point is proposed twice). The store is fsspec's ``local://`` filesystem, which pathfm treats as an object store
(staging folder, trial-by-trial sync) and which every process of the test can see.
``tests/test_sweeps_resume.py`` covers the gentler SIGINT of a sweep in a local folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 8
SPEC = {
    "name": "driver_crash",
    "overrides": {"data.assume_mpp": 0.5, "optim.steps": STEPS, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                  "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1,
                  "data.tissue.thumbnail_size": 256},
    "space": {"kde_weight": {"loguniform": [1e-3, 1.0]}},
    "search": {"algorithm": "optuna", "num_samples": 3, "seed": 7},
    "objective": {"metric": "loss", "mode": "min"},
    "eval": {"enabled": False},
    "report_every": 1,
    "max_concurrent_trials": 1,
}


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _infos(sweep_dir: Path) -> dict[str, dict]:
    if not sweep_dir.exists():
        return {}
    return {i["trial_id"]: dict(i, dir=d) for d in SweepFolder(sweep_dir).trial_dirs() if (i := read_trial(d))}


def _pathfm(*args: str) -> list[str]:
    return [sys.executable, "-m", "pathfm.cli", *args]


def test_sigkilled_driver_of_an_optuna_sweep_on_a_store_resumes_from_the_store_without_rerunning(tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    sweep_dir = tmp_path / "bucket" / "driver_crash"  # the sweep in the store, read here through the local disk
    uri = f"local://{tmp_path / 'bucket'}"
    staging = tmp_path / "staging"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATHFM_SWEEP_STAGING=str(staging))
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(_pathfm("sweep", "run", str(spec_path), "--storage", uri, "--num-cpus", "2", "-q"),
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    family: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # one trial finished, the next has a checkpoint and is still training
            infos = _infos(sweep_dir)
            done = [i for i in infos.values() if i.get("status") == "TERMINATED"]
            running = [i for i in infos.values() if i.get("status") == "RUNNING" and not (i["dir"] / "DONE").exists()
                       and (i["dir"] / "checkpoints" / "step_00000002.pt.sha256").exists()]
            if done and running:
                break
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not reach the point to crash it in time")
        family = _descendants(proc.pid)  # Ray's processes started by this driver
        proc.kill()  # SIGKILL: Tune gets no chance to save its state one last time
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in family:  # a crashed head takes its Ray processes with it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    before = _infos(sweep_dir)
    finished = {k for k, i in before.items() if i["status"] == "TERMINATED"}
    interrupted = {k for k, i in before.items() if i["status"] == "RUNNING"}
    assert len(finished) == 1 and len(interrupted) == 1, {k: i["status"] for k, i in before.items()}
    # the driver kept Tune's state in the store current while the sweep ran (not only at its end)
    assert list(sweep_dir.glob("experiment_state-*.json")) and list(sweep_dir.glob("searcher-state-*.pkl"))
    assert not (sweep_dir / "results.parquet").exists()
    shutil.rmtree(staging)  # the driver's node is lost with its staging folder

    # resumed elsewhere (here: another $PATHFM_SWEEP_STAGING): staged where the driver ran it, Tune's state holds it
    env["PATHFM_SWEEP_STAGING"] = str(tmp_path / "other_staging")
    res = subprocess.run(_pathfm("sweep", "resume", f"{uri}/driver_crash", "--num-cpus", "2", "-q"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "where its driver ran it" in res.stderr and not (tmp_path / "other_staging").exists()
    after = _infos(sweep_dir)
    assert len(after) == 3, sorted(after)  # the study's budget of 3 trials, not 3 more, none counted twice
    assert {i["status"] for i in after.values()} == {"TERMINATED"}
    (done_id,) = finished
    assert after[done_id]["attempts"] == 1 and after[done_id]["ended_at"] == before[done_id]["ended_at"]
    (cut_id,) = interrupted
    kdes = [i["params"]["kde_weight"] for i in after.values()]
    assert len(set(kdes)) == 3, kdes  # a searcher restarted from scratch would propose the first point again
    if cut_id in after:  # Ray's last experiment snapshot knew the interrupted trial: it continued
        assert after[cut_id]["attempts"] == 2 and after[cut_id]["restored_from_step"] >= 2
    else:  # it started after Ray's last snapshot: Ray ran it again under a new id, the restored searcher
        lost = sweep_dir / "lost_trials" / before[cut_id]["dir"].name  # proposing the very same point;
        assert (lost / "trial.json").exists()  # the orphaned folder is set aside, not counted twice
        assert before[cut_id]["params"]["kde_weight"] in kdes
    for info in after.values():  # each step trained once, none missing
        assert [r["step"] for r in read_jsonl(info["dir"] / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert list(sweep_dir.glob("searcher-state-*.pkl"))
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df["trial_id"].n_unique() == 3
    assert df.group_by(["trial_id", "kind", "step", "final", "metric"]).len()["len"].max() == 1
