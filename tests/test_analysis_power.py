"""`pathfm analyze power` and `pathfm ablate run --dry-run --pilot`: variance components of a pilot, the minimum
detectable effect and the seeds an effect needs, checked against the same numbers computed by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pathfm.analysis.power import min_detectable_effect, seeds_needed, variance_components
from pathfm.cli import main


def _pilot(tmp_path, seeds: int = 4):
    """A tidy CSV: arms base / kde / hed, 2 tasks x 3 folds, a seed effect shared by the arms of a seed."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        shared = rng.normal(0, 0.02)
        for arm, eff in (("base", 0.0), ("kde", 0.01), ("hed", -0.01)):
            own = rng.normal(0, 0.01)
            for task in ("crc", "osteo"):
                for f in range(3):
                    rows.append(dict(arm=arm, seed=s, task=task, fold=f, metric="balanced_accuracy",
                                     value=0.8 + eff + shared + own + rng.normal(0, 0.02)))
    df = pl.DataFrame(rows)
    path = tmp_path / "pilot.csv"
    df.write_csv(path)
    return df, path


def _per_seed_average(df: pl.DataFrame) -> dict[str, np.ndarray]:
    g = df.group_by("arm", "seed", "task").agg(pl.col("value").mean()).group_by("arm", "seed").agg(pl.col("value").mean())
    return {a: g.filter(pl.col("arm") == a).sort("seed")["value"].to_numpy() for a in ("base", "kde", "hed")}


def test_analyze_power_on_a_tidy_csv(tmp_path, capsys):
    df, path = _pilot(tmp_path)
    avg = _per_seed_average(df)
    d = np.stack([avg["kde"] - avg["base"], avg["hed"] - avg["base"]])
    diff_sd = np.sqrt(((d - d.mean(1, keepdims=True)) ** 2).sum() / (2 * (d.shape[1] - 1)))  # pooled
    assert main(["analyze", "power", str(path), "--baseline", "base", "--effect", "0.02"]) == 0
    out = capsys.readouterr().out
    assert f"sd of a per-seed difference between two arms: {diff_sd:.3f} (measured" in out
    need = seeds_needed(0.02, diff_sd, alpha=0.05 / 2)
    assert f"An effect of 0.02 needs {need} seeds per arm" in out
    assert f"     4 seeds: {min_detectable_effect(diff_sd, 4, 0.05 / 2):.3f}  <- this design" in out


def test_variance_components_recover_the_planted_ones():
    rng = np.random.default_rng(1)
    A, S, T, F = 4, 3000, 2, 5
    shared, own = rng.normal(0, 0.02, size=(1, S, 1, 1)), rng.normal(0, 0.02, size=(A, S, 1, 1))
    x = 0.8 + shared + own + rng.normal(0, 0.03, size=(A, S, T, F))
    vc = variance_components(x, baseline=0)
    # per-seed Average: seed var 0.02^2 * 2 + fold var 0.03^2 / 10; a difference removes the shared part
    assert vc.seed_sd == pytest.approx(np.sqrt(2 * 0.02 ** 2 + 0.03 ** 2 / 10), rel=0.05)
    assert vc.diff_sd == pytest.approx(np.sqrt(2 * 0.02 ** 2 + 2 * 0.03 ** 2 / 10), rel=0.05)
    assert vc.fold_sd == pytest.approx(0.03, rel=0.05) and vc.correlation == pytest.approx(0.47, abs=0.05)


def test_ablate_dry_run_with_a_pilot_says_what_the_plan_can_detect(tmp_path, capsys):
    _, path = _pilot(tmp_path)
    assert main(["ablate", "run", "component", "--scale", "smoke", "--seeds", "3", "--dry-run",
                 "--pilot", str(path), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "This plan: 3 seeds per arm" in out and "An effect of 0.05 needs" in out and "dry run" in out
