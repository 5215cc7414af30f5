"""benchmarks/dinov2_step_speed.py keeps running: its ``--quick`` path (pico ViT, tiny crops and heads, one
alternated round) on pathfm's side always, and on DINOv2's side when a checkout is at hand.

A fresh clone has no DINOv2 checkout and tests download nothing: the DINOv2 half then skips, naming the
variable that points it at one ($PATHFM_DINOV2_CHECKOUT, a facebookresearch/dinov2 source tree, with
``omegaconf`` and ``fvcore`` importable)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dinov2_step_speed.py"
ENV = "PATHFM_DINOV2_CHECKOUT"


def run_quick(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| heads |" in proc.stdout and "load average" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.timeout(120)
def test_quick_pathfm_side(tmp_path):
    got = run_quick(tmp_path)
    assert [r["heads"] for r in got["results"]] == ["shared", "separate"]
    for r in got["results"]:
        assert set(r["cpu_s"]) == {"pathfm_diag", "pathfm"} and all(v > 0 for v in r["cpu_s"].values())
        assert 0 < r["diag_cpu_s"] < r["cpu_s"]["pathfm_diag"]
        assert r["peak_rss_mb"]["pathfm_diag"] > 0 and "time_ratio" not in r


@pytest.mark.timeout(120)
def test_quick_against_dinov2(tmp_path):
    checkout = os.environ.get(ENV)
    if not checkout or not (Path(checkout) / "dinov2" / "train" / "ssl_meta_arch.py").is_file():
        pytest.skip(f"DINOv2 side not run: no facebookresearch/dinov2 checkout (set ${ENV} to one; tests never "
                    "download it); pathfm's side is covered by test_quick_pathfm_side")
    missing = [m for m in ("omegaconf", "fvcore") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"DINOv2 side not run: its training code imports {', '.join(missing)}, not installed here")
    got = run_quick(tmp_path, "--dinov2", checkout, "--heads", "separate")
    (r,) = got["results"]
    assert r["cpu_s"]["dinov2"] > 0 and r["peak_rss_mb"]["dinov2"] > 0
    loss = r["first_step_loss"]  # the same weights, crops and masks: the same first loss
    assert loss["pathfm_diag"] == pytest.approx(loss["dinov2"], rel=1e-4)
