"""Seed-level statistics against known answers: intervals, tests and Holm's correction checked by simulation
against known truth (coverage, false-positive rate, power).

Binomial error: a rate near 0.05 estimated from N draws has sd sqrt(0.05 * 0.95 / N) (0.0049 at N = 2,000);
each bound below is the nominal value plus 3 of those."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.stats import trim_mean

from pathfm.analysis.power import min_detectable_effect, power_paired, seeds_needed
from pathfm.analysis.stats import (
    holm,
    iqm,
    pairwise_worse,
    paired_t,
    seed_columns,
    t_interval,
    verdict,
    welch_t,
)

N = 4000
BOUND = 0.05 + 3 * np.sqrt(0.05 * 0.95 / N)


def test_iqm_matches_trimmed_mean():
    assert iqm(np.arange(1, 9, dtype=float)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    x = np.random.default_rng(1).normal(size=(7, 40))
    np.testing.assert_allclose(iqm(x, axis=1), trim_mean(x, 0.25, axis=1))
    with_nan = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert iqm(with_nan) == pytest.approx(2.5)


def test_t_interval_covers_the_true_mean_at_its_level_with_two_seeds():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        m, lo, hi, k = t_interval(rng.normal(0.7, 0.02, size=(N, n)))
        miss = np.mean((lo > 0.7) | (hi < 0.7))
        assert (k == n).all() and 0.05 - 3 * np.sqrt(0.05 * 0.95 / N) <= miss <= BOUND, (n, miss)
    m, lo, hi, k = t_interval(np.array([0.7, np.nan]))
    assert m == 0.7 and np.isnan(lo) and np.isnan(hi) and k == 1


def test_paired_t_false_positive_rate_and_power_match_theory():
    """Correlated arms (shared seed effect) with no difference: rejects 5 %; with a planted difference of one sd
    of the per-seed difference at 5 seeds: the exact power of the noncentral t (0.40)."""
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.03, size=(N, 5))
    a = 0.8 + seed_effect + rng.normal(0, 0.01, size=(N, 5))
    b = 0.8 + seed_effect + rng.normal(0, 0.01, size=(N, 5))
    fpr = np.mean(paired_t(a, b).p < 0.05)
    assert fpr <= BOUND, fpr
    sd_d = 0.01 * np.sqrt(2)
    hit = np.mean(paired_t(a + sd_d, b).p < 0.05)
    expected = power_paired(sd_d, sd_d, 5)
    assert expected == pytest.approx(0.40, abs=0.01)
    assert abs(hit - expected) < 3 * np.sqrt(expected * (1 - expected) / N), (hit, expected)
    # the same test as scipy's on one row, and seeds missing in one arm are left out of the pairs
    t = paired_t(a[0], b[0])
    assert t.p == pytest.approx(stats.ttest_rel(a[0], b[0]).pvalue) and t.n == 5
    a0 = a[0].copy()
    a0[2] = np.nan
    assert paired_t(a0, b[0]).n == 4


def test_welch_t_holds_its_level_with_unequal_variances_and_a_single_reference_value():
    rng = np.random.default_rng(2)
    arm = rng.normal(0.7, 0.03, size=(N, 3))
    ref = rng.normal(0.7, 0.005, size=(N, 5))  # random init varies less with its init seed than training does
    t = welch_t(arm, ref)
    assert np.mean(t.p < 0.05) <= BOUND and (t.n == 3).all()
    se = np.sqrt(arm[0].var(ddof=1) / 3 + ref[0].var(ddof=1) / 5)  # Welch's standard error, Hsu's df = min(n) - 1
    assert t.p[0] == pytest.approx(2 * stats.t.sf(abs(arm[0].mean() - ref[0].mean()) / se, 2))
    welch_df = stats.ttest_ind(arm, ref, equal_var=False, axis=1).pvalue  # Welch-Satterthwaite: anti-conservative
    assert np.mean(welch_df < 0.05) > np.mean(t.p < 0.05)
    one = welch_t(arm[0], ref[0, :1])  # one init seed: the one-sample test against that value
    assert one.p == pytest.approx(stats.ttest_1samp(arm[0], ref[0, 0]).pvalue)


def test_holm_adjusts_step_down_and_keeps_the_family_wise_error():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(holm(np.array([[0.01, 0.5], [0.02, 0.01]]), axis=0), [[0.02, 0.5], [0.02, 0.02]])
    p = np.random.default_rng(3).uniform(size=(N, 7))  # 7 true nulls
    assert np.mean(p.min(axis=1) < 0.05) > 0.25  # unadjusted: 1 - 0.95^7 = 0.30 family-wise
    assert np.mean((holm(p) < 0.05).any(axis=1)) <= BOUND


def test_not_worse_than_the_best_holds_its_level_although_the_best_is_picked_from_the_data():
    rng = np.random.default_rng(4)
    worse = [pairwise_worse(rng.normal(0.8, 0.02, size=(6, 3, 1))).any() for _ in range(1000)]
    assert np.mean(worse) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)
    v = np.stack([rng.normal(m, 0.005, size=(5, 2)) for m in (0.8, 0.8, 0.7)])  # arm 2 clearly worse
    np.testing.assert_array_equal(pairwise_worse(v), [[False, False], [False, False], [True, True]])
    np.testing.assert_array_equal(pairwise_worse(v, higher_is_better=False)[:2], [[True, True], [True, True]])


def test_seed_columns_average_folds_then_tasks_and_leave_incomplete_seeds_out_of_the_average():
    x = np.array([[[[0.8, 0.9], [0.6, np.nan]], [[0.7, 0.7], [np.nan, np.nan]]]])  # 1 arm, 2 seeds, 2 tasks, 2 folds
    v = seed_columns(x)
    np.testing.assert_allclose(v[0, 0], [0.85, 0.6, 0.725, 0.725])
    assert v[0, 1, 0] == 0.7 and np.isnan(v[0, 1, 1]) and np.isnan(v[0, 1, 2]) and np.isnan(v[0, 1, 3])


def test_verdict_reads_direction_and_missing_p_values():
    assert verdict(0.1, 0.01) == "better" and verdict(-0.1, 0.01) == "worse"
    assert verdict(-0.1, 0.01, higher_is_better=False) == "better"  # a loss that went down
    assert verdict(0.1, 0.06) == "unsure"
    assert verdict(0.01, float("nan")) == "n/a" and verdict(0.01, None) == "n/a"


def test_minimum_detectable_effect_and_seeds_needed_agree_with_the_power_function():
    for n in (2, 3, 5, 10):
        mde = min_detectable_effect(0.02, n)
        assert power_paired(mde, 0.02, n) == pytest.approx(0.8, abs=1e-6)
        approx = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * 0.02 / np.sqrt(n)  # the textbook approximation
        assert approx * 0.98 < mde < approx * (1.2 if n <= 3 else 1.05)  # which understates it at 2-3 seeds
    assert min_detectable_effect(0.02, 1) == float("inf")
    n = seeds_needed(0.02, 0.02)
    assert power_paired(0.02, 0.02, n) >= 0.8 > power_paired(0.02, 0.02, n - 1)
    assert seeds_needed(0.02, 0.02, alpha=0.05 / 7) > n  # Holm's first step over 7 comparisons needs more
