"""benchmarks/gpu_check.py cannot rot: its CPU stand-in mode runs the check sequence here (real subprocesses,
a real 1-rank gloo group, real files). The fast test runs the driver check, every preset's start-up checks and
the sharded step (FSDP2 with the bf16 policy, compiled blocks, activation checkpointing, grad_accum=2, host
syncs counted, DCP round trip); the slow one runs the whole ``--cpu --quick`` sequence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pathfm.config import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def _run(out: Path, *only: str, timeout: float) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--cpu", "--quick", "--out", str(out)] + (["--only", *only] if only else [])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GPU_CHECK_PORT": str(_port())}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text())


def _port() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from ports import free_port

    return free_port()


def test_the_memory_verdict_is_the_relative_error():
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import TOLERANCE, relative_error

    assert relative_error(115, 100) == pytest.approx(0.15) and relative_error(80, 100) == pytest.approx(-0.2)
    assert abs(relative_error(80, 100)) > TOLERANCE >= abs(relative_error(110, 100))


@pytest.mark.timeout(150)
def test_the_cpu_stand_ins_run_the_driver_start_up_and_sharded_checks(tmp_path: Path):
    report = _run(tmp_path, "driver", "start-up checks", "sharded step", timeout=140)
    by_name = {c["name"]: c for c in report["checks"]}
    assert list(by_name) == ["driver", "start-up checks", "sharded step"] and all(c["ok"] for c in by_name.values())
    assert "midnight_vitg14: 32 process(es): fsdp passes" in by_name["start-up checks"]["tail"]
    sharded = by_name["sharded step"]["tail"]
    assert "host syncs {'Tensor.tolist': 3}" in sharded and "DCP round trip: " in sharded and ", 0 differ" in sharded


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_whole_cpu_sequence_runs(tmp_path: Path):
    report = _run(tmp_path, timeout=590)
    names = [c["name"] for c in report["checks"]]
    assert names == ["driver", "start-up checks", "sharded step", "memory", "recompiles", "resume", "attention",
                     "device augmentation", "training step"]
    assert all(c["ok"] for c in report["checks"])
    tails = {c["name"]: c["tail"] for c in report["checks"]}
    assert "compiled graphs 2, graph breaks 0" in tails["recompiles"]
    assert "worst relative difference 0.00e+00" in tails["resume"]
