"""Power and seed planning: the minimum detectable effect of a design and the seeds an effect needs, from the
variance components of a pilot's results.

A comparison of two arms is a paired t-test over seeds (:mod:`pathfm.analysis.stats`). Its power depends on
the standard deviation of the per-seed differences ``sd_d``, the number of seeds ``n`` and the level, which a
table's Holm correction lowers to ``α / m`` for its first comparison (m = comparisons in the family; the
planning figure uses that level, so it is conservative for the later steps of Holm's procedure). Power is the
exact one of the two-sided t-test (noncentral t with noncentrality ``effect · √n / sd_d``).

Variance components of a pilot, per arm from its per-seed Average (folds averaged within a task, tasks averaged):

* ``seed_sd``: pooled within-arm sd of the per-seed Average (training-seed variance plus what fold noise adds
  to one seed's mean);
* ``diff_sd``: pooled sd of the per-seed paired differences arm - baseline (what a paired test sees; smaller
  than ``√2 · seed_sd`` when arms sharing a seed are positively correlated);
* ``fold_sd``: pooled sd of fold scores around their seed's task mean (noise of one evaluation fold);
* ``correlation``: ``1 - diff_sd² / (2 seed_sd²)``, the correlation between arms that share a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from pathfm.analysis.stats import ALPHA, nanmean, seed_columns

POWER = 0.8
MAX_SEEDS = 1000


def power_paired(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` for a true mean difference ``effect``."""
    if n < 2 or not (sd > 0) or not math.isfinite(sd):
        return float("nan")
    df = n - 1
    tc = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * math.sqrt(n) / sd
    with np.errstate(all="ignore"):
        upper = float(sps.nct.sf(tc, df, nc))
        lower = float(sps.nct.cdf(-tc, df, nc))  # the wrong-sign tail: tiny, and NaN in scipy far out
    return upper + (lower if math.isfinite(lower) else 0.0)


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference the paired t-test over ``n`` seeds finds with probability ``power``
    (``inf`` below 2 seeds, NaN without a positive ``sd``)."""
    if n < 2:
        return float("inf")
    if not (sd > 0) or not math.isfinite(sd):
        return float("nan")
    hi = sd
    while power_paired(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda e: power_paired(e, sd, n, alpha) - power, 0.0, hi, xtol=sd * 1e-6))


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest seeds (>= 2) at which the paired t-test finds ``effect`` with probability ``power``; None
    beyond ``max_seeds`` or without a positive ``sd``."""
    if not (sd > 0) or not math.isfinite(sd) or effect == 0:
        return None
    for n in range(2, max_seeds + 1):
        if power_paired(effect, sd, n, alpha) >= power:
            return n
    return None


@dataclass
class VarianceComponents:
    """What a pilot's results say about the noise of a comparison (module docstring)."""

    n_arms: int
    seeds_per_arm: list[int]
    n_tasks: int
    folds_per_task: int
    seed_sd: float
    diff_sd: float
    diff_from_pairs: bool  # diff_sd measured from paired differences with the baseline (else √2 · seed_sd)
    fold_sd: float

    @property
    def correlation(self) -> float:
        if not self.diff_from_pairs or not (self.seed_sd > 0):
            return float("nan")
        return 1.0 - self.diff_sd ** 2 / (2 * self.seed_sd ** 2)

    @property
    def n_seeds(self) -> int:
        """The design's seeds per arm (the smallest arm's)."""
        return min(self.seeds_per_arm) if self.seeds_per_arm else 0


def _pooled_sd(v: np.ndarray) -> float:
    """Pooled within-group sd of ``v`` (groups, values), NaN-aware; NaN without 2 values in any group."""
    n = np.sum(~np.isnan(v), axis=-1)
    m = nanmean(v, axis=-1)
    ss = np.nansum((v - m[..., None]) ** 2, axis=-1)
    dof = np.sum(np.maximum(n - 1, 0))
    return float(math.sqrt(np.sum(np.where(n >= 2, ss, 0.0)) / dof)) if dof > 0 else float("nan")


def variance_components(x: np.ndarray, baseline: int | None = None) -> VarianceComponents:
    """Variance components of ``x[arm, seed, task, fold]`` (NaN where absent) on the Average column."""
    x = np.asarray(x, dtype=float)
    A, S, T, F = x.shape
    avg = seed_columns(x)[..., T]  # (A, S)
    seeds = [int(n) for n in np.sum(~np.isnan(avg), axis=1)]
    seed_sd = _pooled_sd(avg)
    diff_sd, from_pairs = float("nan"), False
    if baseline is not None and A > 1:
        d = np.delete(avg - avg[baseline][None], baseline, axis=0)
        diff_sd = _pooled_sd(d)
        from_pairs = math.isfinite(diff_sd)
    if not from_pairs:
        diff_sd = math.sqrt(2) * seed_sd
    folds = np.sum(~np.isnan(x), axis=-1)
    fold_sd = _pooled_sd(x.reshape(-1, F)) if F > 1 else float("nan")
    return VarianceComponents(A, seeds, T, int(np.max(folds)) if folds.size else 0, seed_sd, diff_sd, from_pairs,
                              fold_sd)


def design_sentence(vc: VarianceComponents, n_comparisons: int, alpha: float = ALPHA, power: float = POWER,
                    digits: int = 3) -> str:
    """One sentence for a table's caption: what this design can detect."""
    m = max(1, n_comparisons)
    n = vc.n_seeds
    if n < 2:
        return "Design: fewer than 2 seeds per arm, so nothing can be detected (run at least 3 seeds)."
    mde = min_detectable_effect(vc.diff_sd, n, alpha / m, power)
    if not math.isfinite(mde):
        return "Design: the seeds do not vary, so no detectable effect can be estimated."
    how = "paired differences" if vc.diff_from_pairs else "√2 × the seed sd"
    return (f"Design: {n} seeds per arm, sd of a per-seed difference {vc.diff_sd:.{digits}f} ({how}); an Average "
            f"difference smaller than {mde:.{digits}f} is found with less than {power:.0%} power at level {alpha}/{m} "
            f"(Holm over {m} comparison{'s' if m != 1 else ''}); `pathfm analyze power` says how many seeds a "
            f"smaller effect needs.")


def power_report(vc: VarianceComponents, n_comparisons: int, effect: float | None = None, alpha: float = ALPHA,
                 power: float = POWER, seed_grid: tuple[int, ...] = (2, 3, 5, 10, 20), digits: int = 3) -> str:
    """The text of ``pathfm analyze power``: the variance components, the minimum detectable effect at the
    pilot's and other seed counts, and (``effect``) the seeds that effect needs."""
    m = max(1, n_comparisons)
    level = alpha / m
    f = f".{digits}f"
    lines = [
        "Variance components (Average over tasks, per seed):",
        f"  arms: {vc.n_arms}; seeds per arm: {min(vc.seeds_per_arm)}-{max(vc.seeds_per_arm)}; tasks: {vc.n_tasks}; "
        f"folds per task: {vc.folds_per_task}",
        f"  seed sd (between seeds, within an arm): {vc.seed_sd:{f}}",
        f"  sd of a per-seed difference between two arms: {vc.diff_sd:{f}} "
        + ("(measured: paired differences with the baseline)" if vc.diff_from_pairs else
           "(√2 × seed sd: no baseline shares seeds with the arms, arms taken as independent)"),
    ]
    if math.isfinite(vc.correlation):
        lines.append(f"  correlation between arms sharing a seed: {vc.correlation:+.2f}")
    if math.isfinite(vc.fold_sd):
        lines.append(f"  fold sd (one evaluation fold around its seed's task mean): {vc.fold_sd:{f}}")
    lines += ["", f"Minimum detectable effect on the Average ({power:.0%} power, two-sided paired t-test, level "
              f"{alpha}/{m} = {level:.4g}: Holm over {m} comparison{'s' if m != 1 else ''}):"]
    grid = sorted(set(seed_grid) | ({vc.n_seeds} if vc.n_seeds >= 2 else set()))
    for n in grid:
        mde = min_detectable_effect(vc.diff_sd, n, level, power)
        tag = "  <- this design" if n == vc.n_seeds else ""
        lines.append(f"  {n:>4} seeds: {mde:{f}}{tag}")
    if effect is not None:
        need = seeds_needed(effect, vc.diff_sd, level, power)
        lines += ["", (f"An effect of {effect:g} needs {need} seeds per arm ({power:.0%} power at level {level:.4g})."
                       if need is not None else
                       f"An effect of {effect:g} needs more than {MAX_SEEDS} seeds per arm (or the seeds do not vary).")]
    return "\n".join(lines) + "\n"
