"""Bootstrap statistics for ablations: percentile CIs, paired differences, probability of improvement, IQM.

Scores live in one array ``X[arm, seed, task, fold]`` (NaN where absent). One bootstrap replicate draws
seeds with replacement and, within each drawn seed and task, eval folds with replacement (a two-stage,
stratified bootstrap: seeds are the independent units, folds the nested ones; Davison & Hinkley 1997,
§2.4). All arms share the same draws, so the difference of two arms is paired by seed (and fold).
The statistic of a cell is the mean over seeds of the mean over folds; the aggregate "Average" is the
mean over tasks per seed, and IQM is the 25 %-trimmed mean of all (seed, task) scores (Agarwal et al.
2021, "Deep RL at the edge of the statistical precipice"). With fewer than two seeds no CI is reported
(``nan`` -> "n/a"): variation across folds alone says nothing about training noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

MIN_SEEDS_FOR_CI = 2


def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``samples`` along ``axis`` (NaN-aware)."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (no CI) stay NaN
        lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=axis)
    return lo, hi


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


def bootstrap_mean_ci(
    x: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI of a 1-D sample (``nan`` CI when fewer than 2 values)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return np.nan, np.nan, np.nan
    if x.size < 2:
        return float(x.mean()), np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    lo, hi = percentile_ci(means, level)
    return float(x.mean()), float(lo), float(hi)


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(~np.isnan(x), axis=axis)
        s = np.nansum(x, axis=axis)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


@dataclass
class Summary:
    """Point estimates and bootstrap draws for every arm and column (tasks, then Average, then IQM).

    ``point``: (A, C); ``draws``: (B, A, C); ``per_seed``: (A, S, C) seed-level scores (NaN if absent)
    used for pairing; ``n_seeds``: (A, C).
    """

    point: np.ndarray
    draws: np.ndarray
    per_seed_draws: np.ndarray  # (B, A, S, C): per drawn seed slot, the fold-resampled score
    n_seeds: np.ndarray
    columns: list[str]


def _column_stats(seed_task: np.ndarray) -> np.ndarray:
    """Per-seed scores (..., S, T) -> per-column statistics (..., T + 2): tasks, Average, IQM.

    Average is defined only for seeds that have every task (else NaN for that seed)."""
    per_task = _nanmean(seed_task, axis=-2)  # (..., T)
    seed_avg = seed_task.mean(axis=-1)  # NaN if any task missing for that seed
    avg = _nanmean(seed_avg, axis=-1)
    flat = seed_task.reshape(*seed_task.shape[:-2], -1)
    return np.concatenate([per_task, avg[..., None], iqm(flat)[..., None]], axis=-1)


def summarise(x: np.ndarray, tasks: list[str], n_boot: int = 2000, seed: int = 0) -> Summary:
    """Two-stage stratified bootstrap of ``x[arm, seed, task, fold]`` (see module docstring)."""
    x = np.asarray(x, dtype=float)
    A, S, T, F = x.shape
    rng = np.random.default_rng(seed)
    fold_means = _nanmean(x, axis=-1)  # (A, S, T)
    point = _column_stats(fold_means)  # (A, T + 2)
    # folds present per (seed, task): the largest count over arms (same protocol for all arms)
    n_folds = np.maximum(np.sum(~np.isnan(x), axis=-1).max(axis=0), 1)  # (S, T)
    s_idx = rng.integers(0, S, size=(n_boot, S))
    if F > 1:
        u = rng.random((n_boot, S, T, F))
        f_idx = np.floor(u * n_folds[s_idx][..., None]).astype(np.int64)  # (B, S, T, F)
        t_idx = np.arange(T)[None, None, :, None]
        # gather in chunks of replicates: the (A, b, S, T, F) tensor stays under ~160 MB
        step = max(1, int(2e7 // max(A * S * T * F, 1)))
        seed_task = np.concatenate(
            [_nanmean(x[:, s_idx[i:i + step, :, None, None], t_idx, f_idx[i:i + step]], axis=-1)
             for i in range(0, n_boot, step)],
            axis=1,
        )  # (A, B, S, T)
    else:
        seed_task = fold_means[:, s_idx, :]  # (A, B, S, T)
    seed_task = np.moveaxis(seed_task, 1, 0)  # (B, A, S, T)
    draws = _column_stats(seed_task)  # (B, A, T + 2)
    # per-seed column values for pairing: tasks, per-seed average, per-seed mean over tasks for IQM slot
    seed_avg = seed_task.mean(axis=-1, keepdims=True)
    per_seed = np.concatenate([seed_task, seed_avg, seed_avg], axis=-1)  # (B, A, S, T + 2)
    has = ~np.isnan(fold_means)  # (A, S, T)
    n_task = has.sum(axis=1)  # (A, T)
    n_all = has.all(axis=2).sum(axis=1)  # seeds with every task
    n_seeds = np.concatenate([n_task, n_all[:, None], n_all[:, None]], axis=1)
    return Summary(point, draws, per_seed, n_seeds, list(tasks) + ["Average", "IQM"])


def ci_from_summary(s: Summary, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) arrays (A, C); NaN where an arm has fewer than two seeds in that column."""
    lo, hi = percentile_ci(s.draws, level, axis=0)
    few = s.n_seeds < MIN_SEEDS_FOR_CI
    return np.where(few, np.nan, lo), np.where(few, np.nan, hi)


@dataclass
class Difference:
    """Arm minus reference, paired by seed: point estimate, CI, P(improvement), shared seeds."""

    delta: np.ndarray  # (A, C)
    lo: np.ndarray
    hi: np.ndarray
    p_improve: np.ndarray
    n_pairs: np.ndarray


def paired_difference(
    s: Summary, x_point_seed: np.ndarray, ref: int | np.ndarray, level: float = 0.95, higher_is_better: bool = True
) -> Difference:
    """Paired bootstrap of ``arm - ref`` per column, using only seeds both arms have.

    ``x_point_seed``: (A, S, C) observed per-seed column scores; ``ref``: an arm index, or one index per
    column (e.g. the best arm of each column). P(improvement) is the bootstrap probability that the mean
    paired difference is > 0 (ties count half); with < 2 shared seeds everything but the point is NaN.
    """
    A, S, C = x_point_seed.shape
    ref_idx = np.broadcast_to(np.asarray(ref), (C,))
    cols = np.arange(C)
    ref_obs = x_point_seed[ref_idx, :, cols].T  # (S, C)
    both = ~np.isnan(x_point_seed) & ~np.isnan(ref_obs)[None]  # (A, S, C)
    n_pairs = both.sum(axis=1)
    d_obs = np.where(both, x_point_seed - ref_obs[None], np.nan)
    delta = _nanmean(d_obs, axis=1)
    ref_draw = s.per_seed_draws[:, ref_idx, :, cols]  # (C, B, S)  advanced indexing moves C first
    ref_draw = np.moveaxis(ref_draw, 0, -1)  # (B, S, C)
    d = s.per_seed_draws - ref_draw[:, None]  # (B, A, S, C); NaN where either seed is absent
    dmean = _nanmean(d, axis=2)  # (B, A, C)
    # IQM is not a per-seed statistic: difference the IQMs under the shared (paired) draws instead
    dmean[..., -1] = s.draws[..., -1] - s.draws[:, ref_idx[-1], -1][:, None]
    delta[:, -1] = s.point[:, -1] - s.point[ref_idx[-1], -1]
    lo, hi = percentile_ci(dmean, level, axis=0)
    sign = 1.0 if higher_is_better else -1.0
    valid = ~np.isnan(dmean)
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = np.where(valid, (sign * dmean > 0) + 0.5 * (dmean == 0), 0.0).sum(0)
        p = wins / np.maximum(valid.sum(0), 1)
    few = n_pairs < MIN_SEEDS_FOR_CI
    return Difference(delta, np.where(few, np.nan, lo), np.where(few, np.nan, hi), np.where(few, np.nan, p), n_pairs)


def ci_verdict(delta: float, lo: float, hi: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the CI ``[lo, hi]`` of a difference excludes 0 (direction of ``delta``,
    read through ``higher_is_better``), ``unsure`` when it contains 0, ``n/a`` without a finite CI."""
    if not all(v is not None and np.isfinite(v) for v in (lo, hi)):
        return "n/a"
    if lo > 0 or hi < 0:
        return "better" if (delta > 0) == higher_is_better else "worse"
    return "unsure"


def per_seed_columns(x: np.ndarray) -> np.ndarray:
    """Observed per-seed column scores (A, S, T + 2): task fold-means, the per-seed Average (twice: the
    IQM column is paired through the per-seed average)."""
    fm = _nanmean(np.asarray(x, dtype=float), axis=-1)  # (A, S, T)
    avg = fm.mean(axis=-1, keepdims=True)
    return np.concatenate([fm, avg, avg], axis=-1)
