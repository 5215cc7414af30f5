"""Hung trials: the watchdog fires only after ``run.hang_timeout_s`` without progress (or, before the first step,
after the start-up allowance); a trial process hung before its first step is killed and recorded; a sweep that
could not retry a hung trial says so at start; and in a real local Ray sweep a 2-worker gloo DDP trial whose
rank 0 blocks (a hang rule of tests/fault_injection.py) is killed, retried by Tune from its last checkpoint and
finishes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from ports import free_port

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial
from fault_injection import fault_environment
from pathfm.infra.hang import STARTUP_FACTOR, HangWatchdog, no_retry_warning, startup_allowance
from pathfm.sweeps.spec import expand_trials, spec_from_dict, sweep_hang_timeouts, trial_configs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_watchdog_fires_only_after_the_timeout_without_progress(tmp_path: Path):
    killed, messages = threading.Event(), []
    dog = HangWatchdog(1.5, on_hang=messages.append, kill=killed.set, poll_s=0.05, startup_s=30).start()
    try:
        for step in range(1, 8):  # steady progress every 0.1 s (margin for a loaded machine): never fires
            time.sleep(0.1)
            dog.on_log({"step": step})
        assert not killed.is_set()
        t0 = time.monotonic()
        assert killed.wait(10)  # the start-up allowance (30 s) no longer applies after the first step
        assert 1.4 <= time.monotonic() - t0 <= 5.0
    finally:
        dog.stop()
    assert dog.fired and len(messages) == 1
    assert "after step 7" in messages[0] and "run.hang_timeout_s=1.5" in messages[0]


@pytest.mark.timeout(120)
def test_watchdog_watches_startup_with_its_own_allowance(tmp_path: Path):
    killed, messages = threading.Event(), []
    dog = HangWatchdog(0.2, on_hang=messages.append, kill=killed.set, poll_s=0.05, startup_s=1.0).start()
    t0 = time.monotonic()
    try:
        assert killed.wait(10)
        assert 0.95 <= time.monotonic() - t0 <= 5.0  # the start-up allowance, not the 0.2 s step timeout
    finally:
        dog.stop()
    assert messages[0].startswith("no first training step within 1 s of the trial's start (run.startup_timeout_s=1)")

    killed = threading.Event()
    dog = HangWatchdog(0.2, on_hang=lambda m: None, kill=killed.set, poll_s=0.05).start()
    assert not killed.wait(0.6)  # without a start-up allowance start-up is not watched
    dog.stop()
    dog.on_log({"step": 1})
    assert not killed.wait(0.6)  # a stopped watchdog never fires


def test_startup_allowance_is_the_knob_or_a_multiple_of_the_hang_timeout():
    assert startup_allowance(10, None) == STARTUP_FACTOR * 10
    assert startup_allowance(10, 7) == 7


@pytest.mark.timeout(120)
def test_trial_hung_before_its_first_step_is_killed_and_recorded(tmp_path: Path):
    """A real trial process (run_trial, the Tune function's body) blocks before training (a hang rule at step 0):
    the watchdog records the start-up hang and SIGKILLs the process."""
    code = (
        "import sys; from pathlib import Path\n"
        "from pathfm.sweeps.spec import spec_from_dict, expand_trials\n"
        "from pathfm.sweeps.trainable import run_trial\n"
        "spec = spec_from_dict({'name': 'h', 'overrides': {'data.assume_mpp': 0.5, 'run.hang_timeout_s': 0.5,"
        " 'run.startup_timeout_s': 1.5}})\n"
        "run_trial(spec, expand_trials(spec)[0], Path(sys.argv[1]), trial_id='t0', sweep='h', report=None)\n"
    )
    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"at_step": 0, "hang": True}]))
    env = dict(os.environ, **fault_environment(rules, {"PYTHONPATH": str(REPO)}))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t0")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    t = read_trial(tmp_path / "t0")
    assert t["hangs"] == 1 and t["status"] == "RUNNING"  # the sweep's driver marks the killed attempt
    assert "no first training step within" in t["last_hang"] and "run.startup_timeout_s=1.5" in t["last_hang"]
    assert not (tmp_path / "t0" / "metrics.jsonl").exists()


STARTUP_S, COLLECTIVE_S = 5, 120


def _rank_with_a_peer_that_never_joins(rank: int, port: int, run_dir: str) -> None:
    """Rank 0: a sweep trial's rank 0 (run_trial, as Ray Train's worker loop runs it); rank 1 joins the process
    group, then sleeps for ever instead of training, so rank 0 waits in its first collective (building the
    DDP model)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    from pathfm.ssl.distributed import init_distributed
    from pathfm.sweeps.trainable import run_trial

    if rank == 1:
        init_distributed("cpu", COLLECTIVE_S)
        while True:
            time.sleep(3600)
    spec = spec_from_dict({"name": "h", "overrides": {
        "data.assume_mpp": 0.5, "data.n_slides": 1, "data.tissue.thumbnail_size": 256, "run.device": "cpu",
        "run.hang_timeout_s": 1, "run.startup_timeout_s": STARTUP_S, "run.collective_timeout_s": COLLECTIVE_S}})
    run_trial(spec, expand_trials(spec)[0], Path(run_dir), trial_id="t0", sweep="h", report=None)


@pytest.mark.slow  # 10-12 s: two spawned processes importing torch
@pytest.mark.timeout(300)
def test_ddp_rank_that_never_joins_training_is_caught_by_rank_0s_startup_allowance(tmp_path: Path):
    """Real 2-process gloo group: rank 0 is killed by its watchdog after the start-up allowance, long before the
    collective timeout (without start-up watching it would wait the full 120 s, then fail with an error)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_with_a_peer_that_never_joins, args=(r, port, str(tmp_path / "t0")))
             for r in (0, 1)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=COLLECTIVE_S - 30)
        waited = time.monotonic() - t0
        assert procs[0].exitcode == -signal.SIGKILL, procs[0].exitcode
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=30)
    assert waited < COLLECTIVE_S - 30
    t = read_trial(tmp_path / "t0")
    assert t["hangs"] == 1 and f"run.startup_timeout_s={STARTUP_S}" in t["last_hang"], t
    assert t["last_hang"].startswith("no first training step within")
    assert not (tmp_path / "t0" / "metrics.jsonl").exists()


def test_sweep_that_cannot_retry_a_hung_trial_warns_at_start(tmp_path: Path, capsys):
    from pathfm.errors import SweepError
    from pathfm.records.sweep_folder import SPEC_FILE
    from pathfm.sweeps.runner import run_sweep

    def spec(max_failures: int, **extra):
        return spec_from_dict({"name": "nohang", "max_failures": max_failures, **extra})

    grid = spec(0, overrides={"run.hang_timeout_s": 60})
    assert sweep_hang_timeouts(grid, trial_configs(grid, expand_trials(grid))) == [60.0]
    line = no_retry_warning(grid.max_failures, [60.0])
    assert "max_failures is 0" in line and "end ERROR" in line and "max_failures >= 1" in line
    assert no_retry_warning(1, [60.0]) is None and no_retry_warning(0, [None]) is None
    assert no_retry_warning(-1, [60.0]) is None  # -1: unlimited retries
    arms = spec(0, arms=[{"name": "a"}, {"name": "b", "overrides": {"run.hang_timeout_s": 30}}],
                search={"algorithm": "optuna", "num_samples": 2}, space={"kde_weight": {"uniform": [0.0, 0.1]}})
    assert trial_configs(arms, expand_trials(arms, validate=False)) == []  # adaptive: no configs before it runs
    assert sweep_hang_timeouts(arms, []) == [None, 30.0]

    # at sweep start, before anything else (here the sweep folder is taken, so it stops right after)
    (tmp_path / "nohang").mkdir()
    (tmp_path / "nohang" / SPEC_FILE).write_text("taken\n")
    with pytest.raises(SweepError):
        run_sweep(grid, storage=tmp_path, verbose=0)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pathfm sweep: warning: {line}"]
    with pytest.raises(SweepError):
        run_sweep(spec(1, overrides={"run.hang_timeout_s": 60}), storage=tmp_path, verbose=0)
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hung_rank_of_a_ddp_trial_is_killed_and_retried_from_its_checkpoint_in_a_ray_sweep(tmp_path: Path, monkeypatch):
    """2 Ray Train gloo workers: rank 0 blocks after logging step 2, its watchdog kills it after
    ``run.hang_timeout_s``, rank 1's next collective fails, Tune retries the trial from checkpoint 1."""
    import ray

    from pathfm.sweeps.runner import run_sweep, trial_summary_line

    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"at_step": 2, "hang": True}]))
    for name, value in fault_environment(rules).items():
        monkeypatch.setenv(name, value)  # inherited by the local Ray's worker processes
    # Ray Train's spot-preemption watcher is one more actor process per attempt; this test needs none
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    hang_timeout = 3  # margin over a healthy step + checkpoint (3 steps took train_time_s 0.6 s in a measured run)
    spec = spec_from_dict({
        "name": "ddp_hang", "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
        "report_every": 1, "max_failures": 1, "resources": {"cpu": 0.5, "workers": 2},
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 3, "optim.warmup_steps": 1, "run.checkpoint_every": 1,
                      "data.batch_size": 2, "data.crops.n_local": 2, "data.crops.global_size": 56,
                      "data.crops.local_size": 28, "data.n_slides": 1, "data.tissue.thumbnail_size": 256,
                      "dino_head.n_prototypes": 64, "ibot_head.n_prototypes": 64,
                      "run.hang_timeout_s": hang_timeout, "run.startup_timeout_s": 300, "run.collective_timeout_s": 60},
    })
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    finally:
        ray.shutdown()
    (d,) = SweepFolder(sweep_dir).trial_dirs()
    t = read_trial(d)
    assert t["status"] == "TERMINATED" and t["final_step"] == 3, t.get("error")
    assert t["attempts"] == 2 and t["hangs"] == 1
    quiet = re.match(rf"no training progress for (\d+) s after step 2 \(run.hang_timeout_s={hang_timeout}\)", t["last_hang"])
    assert quiet and hang_timeout <= int(quiet.group(1)) <= hang_timeout + 3, t["last_hang"]  # detected within the timeout
    assert t["restored_from_step"] == 1  # the checkpoint before the hang (step 2's was never written)
    assert [r["step"] for r in read_jsonl(d / "metrics.jsonl")] == [1, 2, 3]
    assert (d / ".test_hang_done").read_text() == "2"
    assert "hung 1x (killed and retried)" in trial_summary_line("ddp_hang", t)
