"""Seed-level inference for ablation tables: Student-t intervals, paired and Welch t-tests, Holm's step-down.

The unit of replication of a training run is its seed (initialisation, data order, augmentation draws).
Evaluation folds, probe seeds and tasks are repeated measurements of one trained network, not replicates.
So scores ``X[arm, seed, task, fold]`` (NaN where absent) are first reduced per seed -- folds averaged
within a task, tasks averaged into the Average -- and every interval and test is computed over those
per-seed values only:

* a cell's interval: Student t over the arm's per-seed values, ``mean ± t_{1-α/2, n-1} s / √n``;
* arm vs arm (the baseline, a planned reference, the best): the paired t-test on per-seed differences over
  the seeds both arms share (pairing removes what a seed shares between arms; it never invalidates the test);
* arm vs an untrained network evaluated at its own init seeds: an unpaired t-test (Welch's standard error,
  Hsu's conservative degrees of freedom);
* a table's family of comparisons (the arms against the baseline, the planned pairs, the arms against random
  init, all pairs behind "not significantly worse than the best") is corrected by Holm's step-down, which
  keeps the family-wise error at α; the unadjusted p-value is reported beside it.

A percentile bootstrap over 2-5 seeds is anti-conservative (a resample sees (n-1)/n of the variance; two
seeds have three distinct resamples); the t interval is exact for normal per-seed values and honestly wide
with few seeds (``t_{0.975, 1} = 12.7``). The calibration study (``benchmarks/calibration.py``,
docs/statistics.md) measures every verdict's false-positive rate and power by simulation.

The percentile interval at the end serves bootstrap draws over many trials (parameter importance, curve fits).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

MIN_SEEDS_FOR_CI = 2
ALPHA = 0.05


def nanmean(x: np.ndarray, axis) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN (no warning) where every value is NaN."""
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(~np.isnan(x), axis=axis)
        s = np.nansum(x, axis=axis)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: mean of the middle 50 % (25 % trimmed from each end), NaN-aware along ``axis``."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    xs = np.sort(x, axis=-1)  # NaNs sort last
    n = np.sum(~np.isnan(x), axis=-1)
    k = np.floor(0.25 * n).astype(int)
    idx = np.arange(x.shape[-1])
    keep = (idx >= k[..., None]) & (idx < (n - k)[..., None])
    s = np.where(keep, xs, 0.0).sum(-1)
    c = keep.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def seed_columns(x: np.ndarray) -> np.ndarray:
    """``x[..., seed, task, fold]`` -> per-seed column values ``(..., seed, T + 2)``: each task's fold mean,
    the Average over tasks (NaN for a seed that lacks a task) and the interquartile mean over tasks."""
    per_task = nanmean(np.asarray(x, dtype=float), axis=-1)  # (..., S, T)
    avg = per_task.mean(axis=-1, keepdims=True)
    trimmed = np.where(np.isnan(avg), np.nan, iqm(per_task)[..., None])
    return np.concatenate([per_task, avg, trimmed], axis=-1)


def _sd(v: np.ndarray, n: np.ndarray) -> np.ndarray:
    m = nanmean(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss = np.nansum((v - m[..., None]) ** 2, axis=-1)
        return np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def t_quantile(level: float, df: np.ndarray) -> np.ndarray:
    """Two-sided Student-t critical value ``t_{1-(1-level)/2, df}`` (NaN for df < 1)."""
    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(df >= 1, sps.t.ppf(0.5 + level / 2, np.maximum(df, 1)), np.nan)


def t_interval(v: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t interval over the last axis of ``v`` (NaN-aware): ``(mean, lo, hi, n)``; the
    interval is NaN with fewer than :data:`MIN_SEEDS_FOR_CI` values."""
    v = np.asarray(v, dtype=float)
    n = np.sum(~np.isnan(v), axis=-1)
    m = nanmean(v, axis=-1)
    half = t_quantile(level, n - 1) * _sd(v, n) / np.sqrt(np.maximum(n, 1))
    few = n < MIN_SEEDS_FOR_CI
    return m, np.where(few, np.nan, m - half), np.where(few, np.nan, m + half), n


@dataclass
class Test:
    """A difference ``a - b`` with its ``level`` interval and two-sided p-value (arrays of one shape)."""

    delta: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray
    n: np.ndarray  # seeds behind it: pairs (paired test) or ``a``'s seeds (Welch)


def _t_test(delta, se, df, level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval and two-sided p of ``delta`` with standard error ``se`` on ``df`` degrees of freedom. A zero
    standard error (identical differences) gives p = 0 for a non-zero delta and 1 for a zero one."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tstat = np.where(se > 0, np.abs(delta) / np.where(se > 0, se, 1.0), np.where(delta == 0, 0.0, np.inf))
        p = np.where(df >= 1, 2 * sps.t.sf(tstat, np.maximum(df, 1)), np.nan)
    half = t_quantile(level, df) * se
    return delta - half, delta + half, np.where(np.isnan(delta), np.nan, p)


def paired_t(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Test:
    """Paired t-test of ``a - b`` over the last axis (seeds), using the seeds both have."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # NaN where either is absent
    n = np.sum(~np.isnan(d), axis=-1)
    delta = nanmean(d, axis=-1)
    se = _sd(d, n) / np.sqrt(np.maximum(n, 1))
    lo, hi, p = _t_test(delta, se, (n - 1).astype(float), level)
    few = n < MIN_SEEDS_FOR_CI
    return Test(delta, np.where(few, np.nan, lo), np.where(few, np.nan, hi), np.where(few, np.nan, p), n)


def welch_t(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Test:
    """Unpaired t-test of ``mean(a) - mean(b)`` over the last axes (independent replicates, e.g. an arm's
    training seeds against random init's init seeds) with Welch's standard error and Hsu's conservative
    ``min(n_a, n_b) - 1`` degrees of freedom: the Welch-Satterthwaite ones reject up to 10 % of true nulls at
    2 seeds when the arm varies more than random init (benchmarks/calibration.py). With a single ``b``
    value it is the one-sample test of ``a`` against that value (``b``'s own variance unknown)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = np.sum(~np.isnan(a), axis=-1), np.sum(~np.isnan(b), axis=-1)
    delta = nanmean(a, axis=-1) - nanmean(b, axis=-1)
    va = _sd(a, na) ** 2 / np.maximum(na, 1)
    vb = np.where(nb >= 2, _sd(b, nb) ** 2 / np.maximum(nb, 1), 0.0)
    se = np.sqrt(va + vb)
    df = (np.where(nb >= 2, np.minimum(na, nb), na) - 1).astype(float)
    lo, hi, p = _t_test(delta, se, df, level)
    few = (na < MIN_SEEDS_FOR_CI) | (nb < 1)
    return Test(delta, np.where(few, np.nan, lo), np.where(few, np.nan, hi), np.where(few, np.nan, p), na)


def holm(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along ``axis`` (one family per slice); NaN entries are not part of
    the family and stay NaN. Rejecting where the adjusted p < α keeps the family-wise error at α."""
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)  # family size per slice
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    k = np.arange(p.shape[-1])
    with np.errstate(invalid="ignore"):
        adj = np.minimum(1.0, np.fmax.accumulate(np.where(np.isnan(ranked), np.nan, (m - k) * ranked), axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.where(np.isnan(ranked), np.nan, adj), axis=-1)
    return np.moveaxis(out, -1, axis)


def verdict(delta: float, p_adjusted: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` when the (adjusted) p-value is below ``alpha`` (direction of ``delta`` read
    through ``higher_is_better``), ``unsure`` otherwise, ``n/a`` without a p-value (fewer than 2 seeds)."""
    if p_adjusted is None or not np.isfinite(p_adjusted) or not np.isfinite(delta):
        return "n/a"
    if p_adjusted < alpha:
        return "better" if (delta > 0) == higher_is_better else "worse"
    return "unsure"


def pairwise_worse(v: np.ndarray, higher_is_better: bool = True, alpha: float = ALPHA) -> np.ndarray:
    """Per arm and column, whether some other arm is significantly better: paired t-tests of every pair of
    arms over their shared seeds, Holm over the pairs of each column. ``v``: (..., A, S, C) per-seed values
    (leading axes: independent tables); returns bool (..., A, C). Controls the family-wise error over all
    pairs, so "significantly worse than the best" holds its level although the best is picked from the data."""
    v = np.asarray(v, dtype=float)
    A = v.shape[-3]
    worse = np.zeros(v.shape[:-3] + (A, v.shape[-1]), dtype=bool)
    pairs = [(i, j) for i in range(A) for j in range(i + 1, A)]
    if not pairs:
        return worse
    ii, jj = np.array(pairs).T
    t = paired_t(np.moveaxis(v[..., ii, :, :], -2, -1), np.moveaxis(v[..., jj, :, :], -2, -1))  # (..., P, C): i - j
    sig = np.nan_to_num(holm(t.p, axis=-2), nan=1.0) < alpha
    sign = 1.0 if higher_is_better else -1.0
    i_worse, j_worse = sig & (sign * t.delta < 0), sig & (sign * t.delta > 0)
    for k, (i, j) in enumerate(pairs):
        worse[..., i, :] |= i_worse[..., k, :]
        worse[..., j, :] |= j_worse[..., k, :]
    return worse


# ----------------------------------------------------------------- bootstrap draws (statistics over many trials)
def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``samples`` along ``axis`` (NaN-aware)."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (no CI) stay NaN
        lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=axis)
    return lo, hi
