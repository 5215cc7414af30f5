"""Hung trials: the watchdog fires only after ``run.hang_timeout_s`` without progress, and in a real local Ray
sweep a trial whose training blocks (test hook ``PATHFM_TEST_HANG_AT_STEP``) is killed, retried by Tune from its
last checkpoint and finishes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pathfm.io import read_jsonl
from pathfm.sweeps.collect import read_trial, trial_dirs
from pathfm.sweeps.hang import TEST_HANG_ENV, HangWatchdog


def test_watchdog_fires_only_after_the_timeout_without_progress(tmp_path: Path):
    killed, messages = threading.Event(), []
    dog = HangWatchdog(1.5, tmp_path, on_hang=messages.append, kill=killed.set, poll_s=0.05).start()
    try:
        for step in range(1, 8):  # steady progress every 0.1 s (margin for a loaded machine): never fires
            time.sleep(0.1)
            dog.on_log({"step": step})
        assert not killed.is_set()
        t0 = time.monotonic()
        assert killed.wait(10)
        assert 1.4 <= time.monotonic() - t0 <= 5.0
    finally:
        dog.stop()
    assert dog.fired and len(messages) == 1
    assert "after step 7" in messages[0] and "run.hang_timeout_s=1.5" in messages[0]


def test_watchdog_waits_for_the_first_step_and_a_stopped_one_never_fires(tmp_path: Path):
    killed = threading.Event()
    dog = HangWatchdog(0.2, tmp_path, on_hang=lambda m: None, kill=killed.set, poll_s=0.05).start()
    assert not killed.wait(0.6)  # start-up (no logged step yet) is not watched
    dog.stop()
    dog.on_log({"step": 1})
    assert not killed.wait(0.6)


@pytest.mark.slow
def test_hung_trial_is_killed_and_retried_from_its_checkpoint_in_a_ray_sweep(tmp_path: Path, monkeypatch):
    import ray

    from pathfm.sweeps.runner import run_sweep, trial_summary_line
    from pathfm.sweeps.spec import spec_from_dict

    monkeypatch.setenv(TEST_HANG_ENV, "4")  # inherited by the local Ray's worker processes
    spec = spec_from_dict({
        "name": "hang", "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
        "report_every": 1, "max_failures": 1,
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 6, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                      "data.batch_size": 2, "data.crops.n_local": 2, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256, "run.hang_timeout_s": 5},
    })
    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    finally:
        ray.shutdown()
    (d,) = trial_dirs(sweep_dir)
    t = read_trial(d)
    assert t["status"] == "TERMINATED" and t["final_step"] == 6, t.get("error")
    assert t["attempts"] == 2 and t["hangs"] == 1 and "after step 4" in t["last_hang"]
    assert t["restored_from_step"] == 2  # the checkpoint before the hang (step 4's was never written)
    assert [r["step"] for r in read_jsonl(d / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert "hung 1x (killed and retried)" in trial_summary_line("hang", t)
