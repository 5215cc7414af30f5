"""The README's main job (scripts/demo.sh) at its smallest size, end to end, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slow


def test_demo_script_produces_table_and_figure(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = dict(os.environ, PATHFM_DEMO_SIZE="tiny", PATHFM_DEMO_DIR=str(out), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(repo_root / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    component = pl.read_parquet(out / "component" / "results.parquet")
    assert set(component["arm"].unique()) >= {"dinov2", "+kde", "+hsv", "+hed", "full", "-kde", "-hsv", "-hed"}
    assert set(component["status"].unique()) == {"TERMINATED"}
    finals = component.filter(pl.col("metric") == "balanced_accuracy", pl.col("kind") == "eval")
    assert finals["value"].is_between(0.0, 1.0).all() and finals.height > 0

    table = (out / "report-component" / "table.csv").read_text()
    for arm in ("dinov2", "+kde", "full", "-hed"):
        assert arm in table
    figure = out / "report-data" / "data_efficiency.png"
    assert figure.stat().st_size > 10_000
    assert (out / "report-component" / "report.md").read_text().count("|") > 20
