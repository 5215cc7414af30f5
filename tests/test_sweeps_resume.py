"""Killing the driver of a running sweep (a real `pathfm sweep run` process) and resuming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPEC = {
    "name": "killme",
    "overrides": {"data.assume_mpp": 0.5, "optim.steps": 8, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                  "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1,
                  "data.tissue.thumbnail_size": 256},
    "space": {"kde_weight": {"grid": [0.0, 0.01, 0.02]}},
    "objective": {"metric": "loss", "mode": "min"},
    "eval": {"enabled": False},
    "report_every": 2,
    "max_concurrent_trials": 2,
}


def _pathfm(*args: str) -> list[str]:
    return [sys.executable, "-m", "pathfm.cli", *args]


def _infos(sweep_dir: Path) -> list[dict]:
    return [dict(read_trial(d) or {}, dir=d) for d in SweepFolder(sweep_dir).trial_dirs()] if sweep_dir.exists() else []


def test_sigint_driver_then_resume_finishes_without_repeating(tmp_path: Path):
    spec_path = tmp_path / "killme.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    storage = tmp_path / "sweeps"
    sweep_dir = storage / "killme"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(_pathfm("sweep", "run", str(spec_path), "--storage", str(storage), "--num-cpus", "2", "-q"),
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait until one trial finished and others are still to do
            infos = _infos(sweep_dir)
            if any(i.get("status") == "TERMINATED" for i in infos):
                break
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("no trial finished in time")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {i["trial_id"]: i for i in _infos(sweep_dir)}
    done_before = {k for k, i in before.items() if i.get("status") == "TERMINATED"}
    assert 1 <= len(done_before) < 3, {k: i.get("status") for k, i in before.items()}

    res = subprocess.run(_pathfm("sweep", "resume", str(sweep_dir), "--num-cpus", "2", "-q"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    after = {i["trial_id"]: i for i in _infos(sweep_dir)}
    assert len(after) == 3 and {i["status"] for i in after.values()} == {"TERMINATED"}
    for k in done_before:  # finished trials were not run again
        assert after[k]["attempts"] == 1 and after[k]["ended_at"] == before[k]["ended_at"]
    for k, info in after.items():
        steps = [r["step"] for r in read_jsonl(info["dir"] / "metrics.jsonl")]
        assert steps == list(range(1, 9)), (k, steps)  # each step trained once, none missing
        if k not in done_before and before.get(k, {}).get("attempts"):
            assert info["attempts"] == 2
    out = subprocess.run(_pathfm("sweep", "status", str(sweep_dir)), capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "3 TERMINATED" in out.stdout
    assert (sweep_dir / "results.parquet").exists()
