"""Bootstrap statistics against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from pathfm.analysis.stats import bootstrap_mean_ci, ci_from_summary, iqm, paired_difference, per_seed_columns, summarise


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    """95 % percentile CI of the mean of N(5, 2^2), n=40: coverage over 400 repetitions ~ 0.95
    (percentile bootstrap under-covers slightly at small n; binomial sd at 400 reps is 0.011)."""
    rng = np.random.default_rng(123)
    hits = 0
    reps = 400
    for r in range(reps):
        x = rng.normal(5.0, 2.0, size=40)
        _, lo, hi = bootstrap_mean_ci(x, n_boot=1000, seed=r)
        hits += lo <= 5.0 <= hi
    coverage = hits / reps
    assert 0.90 <= coverage <= 0.985, coverage


def test_ci_narrower_at_lower_level():
    x = np.random.default_rng(0).normal(size=50)
    _, lo95, hi95 = bootstrap_mean_ci(x, level=0.95)
    _, lo80, hi80 = bootstrap_mean_ci(x, level=0.80)
    assert lo95 < lo80 < hi80 < hi95


def test_single_value_has_no_ci():
    m, lo, hi = bootstrap_mean_ci([0.7])
    assert m == 0.7 and np.isnan(lo) and np.isnan(hi)


def test_iqm_matches_trimmed_mean():
    assert iqm(np.arange(1, 9, dtype=float)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    x = np.random.default_rng(1).normal(size=(7, 40))
    np.testing.assert_allclose(iqm(x, axis=1), trim_mean(x, 0.25, axis=1))
    with_nan = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert iqm(with_nan) == pytest.approx(2.5)


def test_paired_difference_sees_a_small_constant_gain_through_large_seed_noise():
    """Arm 1 = arm 0 + 0.01 on every seed; seeds vary by +-0.05. Unpaired CIs overlap, the paired
    difference is exactly 0.01 with P(improvement) = 1."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.05, size=(1, 5, 1, 1))
    base = 0.8 + seed_effect + rng.normal(0, 0.001, size=(1, 5, 2, 3))
    x = np.concatenate([base, base + 0.01], axis=0)  # (A=2, S=5, T=2, F=3)
    s = summarise(x, ["t1", "t2"], n_boot=500, seed=0)
    lo, hi = ci_from_summary(s)
    assert lo[1, 2] < hi[0, 2]  # Average CIs overlap
    d = paired_difference(s, per_seed_columns(x), 0)
    assert d.delta[1, 2] == pytest.approx(0.01, abs=1e-9)
    assert d.lo[1, 2] == pytest.approx(0.01, abs=1e-9) and d.hi[1, 2] == pytest.approx(0.01, abs=1e-9)
    assert d.p_improve[1, 2] == 1.0
    assert d.delta[0, 2] == 0.0


def test_point_estimate_is_mean_over_seeds_of_fold_means_and_single_seed_has_no_ci():
    x = np.array([[[[0.5, 0.7]], [[0.9, np.nan]]]])  # 1 arm, 2 seeds, 1 task, folds ragged
    s = summarise(x, ["t"], n_boot=200)
    assert s.point[0, 0] == pytest.approx((0.6 + 0.9) / 2)
    one = summarise(x[:, :1], ["t"], n_boot=200)
    lo, hi = ci_from_summary(one)
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_two_stage_bootstrap_covers_the_true_arm_mean():
    """Seeds ~ N(0.8, 0.02^2), folds within a seed ~ N(seed mean, 0.01^2); 12 seeds x 4 folds x 2 tasks.
    The seed-then-fold bootstrap CI of the Average covers 0.8 near the nominal 95 % (percentile intervals
    with 12 units under-cover a little; 250 repetitions, binomial sd 0.014)."""
    rng = np.random.default_rng(7)
    hits, reps = 0, 250
    for r in range(reps):
        seed_means = 0.8 + rng.normal(0, 0.02, size=(1, 12, 1, 1))
        x = seed_means + rng.normal(0, 0.01, size=(1, 12, 2, 4))
        s = summarise(x, ["a", "b"], n_boot=500, seed=r)
        lo, hi = ci_from_summary(s)
        hits += lo[0, 2] <= 0.8 <= hi[0, 2]
    assert 0.87 <= hits / reps <= 0.99, hits / reps


def test_ci_verdict_reads_direction_and_missing_cis():
    from pathfm.analysis.stats import ci_verdict

    assert ci_verdict(0.1, 0.02, 0.2) == "better" and ci_verdict(-0.1, -0.2, -0.01) == "worse"
    assert ci_verdict(-0.1, -0.2, -0.01, higher_is_better=False) == "better"  # a loss that went down
    assert ci_verdict(0.01, -0.02, 0.04) == "unsure"
    assert ci_verdict(0.01, float("nan"), 0.04) == "n/a" and ci_verdict(0.01, None, None) == "n/a"
