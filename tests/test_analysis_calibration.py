"""The calibration study (benchmarks/calibration.py) measures the table's own verdicts, and a few of its points
hold: every verdict's false-positive rate at most nominal within binomial error at 2 and 3 seeds, and the
power it reports at 5 seeds. The full grid is in docs/statistics.md."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pathfm.analysis.load import fold_scores
from pathfm.analysis.table import build_table

_SPEC = importlib.util.spec_from_file_location(
    "calibration", Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py")
calibration = importlib.util.module_from_spec(_SPEC)
sys.modules["calibration"] = calibration  # dataclasses look their module up there
_SPEC.loader.exec_module(calibration)

TABLES = 1000
BOUND = 0.05 + 3 * math.sqrt(0.05 * 0.95 / TABLES)  # 0.071: nominal plus 3 binomial sd


def _frames(x: np.ndarray, r: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One simulated table as tidy fold rows (arm a0 = the baseline) and reference rows (random init)."""
    rows, refs = [], []
    for a, s, t, f in zip(*np.nonzero(~np.isnan(x))):
        rows.append(dict(arm=f"a{a}", replicate=str(s), trial_id=f"a{a}-{s}", task=f"t{t}", fold=int(f),
                         metric="balanced_accuracy", value=float(x[a, s, t, f])))
    for _, i, t, f in zip(*np.nonzero(~np.isnan(r))):
        refs.append(dict(reference="random_init", replicate=str(i), task=f"t{t}", fold=int(f),
                         metric="balanced_accuracy", value=float(r[0, i, t, f])))
    return pl.DataFrame(rows), pl.DataFrame(refs)


def test_the_calibration_computes_the_verdicts_build_table_prints():
    d = calibration.Design(seeds=3, seed_sd=0.01, fold_sd=0.02, rho=0.5, folds=(5, 4))
    rng = np.random.default_rng(7)
    eff = np.array([0, 0.04, 0, -0.05, 0, 0, 0.02, 0])
    x, r = calibration.simulate(d, 4, rng, eff, random_mean=0.72)
    flags = calibration.verdicts(x, r)
    for b in range(4):
        folds, refs = _frames(x[b], r[b])
        t = build_table(folds, baseline="a0", sort="none", references=refs,
                        comparisons=[(f"a{i}", f"a{j}") for i, j in calibration.PLANNED])
        c = t.columns.index("Average")
        assert t.arms == [f"a{i}" for i in range(8)]
        np.testing.assert_array_equal(flags["delta"][b], t.delta_p_adj[1:, c] < 0.05)
        np.testing.assert_array_equal(flags["planned"][b], [cmp["p_adj"][c] < 0.05 for cmp in t.comparisons])
        beats = t.untrained_verdicts()
        np.testing.assert_array_equal(flags["beats"][b], [beats[a] == "beats" for a in t.arms])
        np.testing.assert_array_equal(flags["not_tied"][b], ~(t.best[:, c] | t.tied_with_best[:, c]))


@pytest.mark.parametrize("seeds,rho", [(2, 0.0), (2, 0.8), (3, 0.0), (3, 0.8)])
def test_every_verdict_holds_its_false_positive_rate_with_few_seeds(seeds, rho):
    d = calibration.Design(seeds=seeds, seed_sd=0.01, fold_sd=0.03, rho=rho, folds=(5, 4))
    r = calibration.run_point(d, TABLES, seed=seeds * 10 + int(rho * 10), effects=())
    for key in calibration.FPR_COLUMNS:
        assert r[key] <= BOUND, (key, r[key])
    assert r["delta_fwer_unadjusted"] > 0.15  # what an uncorrected table of 7 comparisons would claim


def test_power_at_planted_effects_with_five_seeds():
    d = calibration.Design(seeds=5, seed_sd=0.01, fold_sd=0.03, rho=0.5, folds=(5, 4))
    r = calibration.run_point(d, TABLES, seed=3, effects=(4.0,))
    # a difference of 4 sd of a per-seed difference: found by every verdict most of the time
    assert r["delta_power_4"] > 0.85 and r["planned_power_4"] > 0.9 and r["best_power_4"] > 0.85
    assert r["beats_power_4"] > 0.95
