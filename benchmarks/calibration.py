"""Calibration of every verdict an ablation table prints: false-positive rate and power, by simulation against
known truth (docs/statistics.md holds the table this prints).

Each simulated table has 8 arms (a baseline and 7 others), ``n`` training seeds per arm, tasks with their own
evaluation folds, and random init evaluated at 5 init seeds. A score is

    mu + task offset + fold difficulty (shared by every arm and seed) + arm effect
       + seed effect (sd ``seed_sd``; correlation ``rho`` between arms that share a seed)
       + fold noise (sd ``fold_sd``, independent per arm, seed, task and fold)

and random init's: ``mu_random + task offset + fold difficulty + init effect (sd 0.01) + fold noise``.
The verdicts are computed by the same functions :func:`pathfm.analysis.table.build_table` calls, batched over
the simulated tables (tests/test_analysis_calibration.py checks that they give build_table's verdicts):

* ``Δ vs baseline``: paired t over seeds, Holm over the 7 arms (Average column);
* ``planned``: 3 planned pairs (arm 2 vs 1, 4 vs 3, 6 vs 5), paired t, Holm over the pairs;
* ``untrained``: every arm vs random init (Welch over seeds), Holm over the 8 arms; "beats" and "worse";
* ``best``: not underlined = some other arm significantly better (all pairs, Holm over the 28 pairs).

Null: every arm equal (and, for ``untrained``, equal to random init). Rates are per table (family-wise: any
false flag in the table) and per comparison. Power: one planted effect of ``k`` times the sd of a per-seed
difference between two arms (``sd_d``); for ``best``, one arm worse by that much; for ``untrained``, every
arm better than random init by that much of random init's and an arm's combined sd.

    python benchmarks/calibration.py                      # the full grid, 2,000 tables per point (~1 min)
    python benchmarks/calibration.py --tables 200 --quick # a smoke run
    python benchmarks/calibration.py --out table.md       # also write the table to a file
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from pathfm.analysis.stats import ALPHA, holm, paired_t, pairwise_worse, seed_columns, welch_t

N_ARMS = 8
INIT_SEEDS = 5
INIT_SD = 0.01
PLANNED = ((2, 1), (4, 3), (6, 5))
MU, MU_RANDOM = 0.75, 0.65  # random init's mean when it is not the null


@dataclass(frozen=True)
class Design:
    """One grid point: seeds per arm, the variance components and the tasks' folds."""

    seeds: int
    seed_sd: float
    fold_sd: float
    rho: float  # correlation between arms that share a seed
    folds: tuple[int, ...]  # evaluation folds of each task

    @property
    def sd_d(self) -> float:
        """sd of the per-seed Average difference between two arms (the planted effects' unit)."""
        fold_var = sum(1.0 / f for f in self.folds) / len(self.folds) ** 2
        return math.sqrt(2 * (1 - self.rho) * self.seed_sd ** 2 + 2 * self.fold_sd ** 2 * fold_var)

    @property
    def sd_untrained(self) -> float:
        """sd of an arm's per-seed Average minus random init's per-init-seed Average (its effects' unit)."""
        fold_var = sum(1.0 / f for f in self.folds) / len(self.folds) ** 2
        return math.sqrt(self.seed_sd ** 2 + INIT_SD ** 2 + 2 * self.fold_sd ** 2 * fold_var)


def simulate(d: Design, tables: int, rng: np.random.Generator, arm_effect: np.ndarray | None = None,
             random_mean: float = MU) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``tables`` tables: arms ``x[table, arm, seed, task, fold]`` (NaN past a task's folds) and random
    init ``r[table, 1, init seed, task, fold]``."""
    T, F = len(d.folds), max(d.folds)
    fold_ok = np.arange(F)[None, :] < np.array(d.folds)[:, None]  # (T, F)
    task = rng.normal(0, 0.05, size=(tables, 1, 1, T, 1))
    difficulty = rng.normal(0, d.fold_sd, size=(tables, 1, 1, T, F))
    shared = rng.normal(size=(tables, 1, d.seeds, 1, 1))
    own = rng.normal(size=(tables, N_ARMS, d.seeds, 1, 1))
    seed_eff = d.seed_sd * (math.sqrt(d.rho) * shared + math.sqrt(1 - d.rho) * own)
    effect = np.zeros(N_ARMS) if arm_effect is None else arm_effect
    x = (MU + task + difficulty + effect[None, :, None, None, None] + seed_eff
         + rng.normal(0, d.fold_sd, size=(tables, N_ARMS, d.seeds, T, F)))
    r = (random_mean + task + difficulty + INIT_SD * rng.normal(size=(tables, 1, INIT_SEEDS, 1, 1))
         + rng.normal(0, d.fold_sd, size=(tables, 1, INIT_SEEDS, T, F)))
    return np.where(fold_ok, x, np.nan), np.where(fold_ok, r, np.nan)


def verdicts(x: np.ndarray, r: np.ndarray, alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """Flags per table on the Average column, from the scores of :func:`simulate`: (B, 7) Δ vs baseline
    significant (and its sign), (B, 3) planned, (B, 8) untrained beats / worse, (B, 8) not underlined (some
    arm significantly better)."""
    v, vr = seed_columns(x), seed_columns(r)
    avg = v.shape[-1] - 2
    a = np.moveaxis(v[..., avg:avg + 1], -2, -1)[..., 0, :]  # (B, A, S)
    base = paired_t(a[:, 1:], a[:, :1])  # (B, 7)
    base_p = holm(base.p, axis=-1)
    plan = paired_t(a[:, [i for i, _ in PLANNED]], a[:, [j for _, j in PLANNED]])
    plan_p = holm(plan.p, axis=-1)
    ri = np.moveaxis(vr[..., avg:avg + 1], -2, -1)[..., 0, :]  # (B, 1, R)
    u = welch_t(a, ri)
    u_p = holm(u.p, axis=-1)
    not_tied = pairwise_worse(v[..., avg:avg + 1], alpha=alpha)[..., 0]  # (B, A)
    return {"delta": base_p < alpha, "delta_sign": np.sign(base.delta), "delta_raw": base.p < alpha,
            "planned": plan_p < alpha, "planned_sign": np.sign(plan.delta),
            "beats": (u_p < alpha) & (u.delta > 0), "worse": (u_p < alpha) & (u.delta < 0),
            "not_tied": not_tied}


def rate(x: np.ndarray) -> float:
    return float(np.mean(x))


def run_point(d: Design, tables: int, seed: int, effects: tuple[float, ...] = (2.0, 4.0)) -> dict[str, float]:
    """False-positive rates (per table and per comparison) and power at the planted effects for one design."""
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    x, r = simulate(d, tables, rng)  # null: every arm and random init equal
    f = verdicts(x, r)
    out["delta_fwer"], out["delta_fpr"] = rate(f["delta"].any(-1)), rate(f["delta"])
    out["delta_fwer_unadjusted"] = rate(f["delta_raw"].any(-1))
    out["planned_fwer"] = rate(f["planned"].any(-1))
    out["beats_fwer"], out["worse_fwer"] = rate(f["beats"].any(-1)), rate(f["worse"].any(-1))
    out["best_fwer"] = rate(f["not_tied"].any(-1))
    for k in effects:
        eff = np.zeros(N_ARMS)
        eff[1] = k * d.sd_d  # arm 1 better than the baseline (and than arm 2: planned pair (2, 1))
        x, r = simulate(d, tables, rng, eff)
        f = verdicts(x, r)
        out[f"delta_power_{k:g}"] = rate(f["delta"][:, 0] & (f["delta_sign"][:, 0] > 0))
        out[f"planned_power_{k:g}"] = rate(f["planned"][:, 0] & (f["planned_sign"][:, 0] < 0))
        eff = np.zeros(N_ARMS)
        eff[3] = -k * d.sd_d  # arm 3 worse than the rest
        x, r = simulate(d, tables, rng, eff)
        out[f"best_power_{k:g}"] = rate(verdicts(x, r)["not_tied"][:, 3])
        x, r = simulate(d, tables, rng, random_mean=MU - k * d.sd_untrained)  # every arm beats random init
        out[f"beats_power_{k:g}"] = rate(verdicts(x, r)["beats"][:, 0])
    return out


def grid(quick: bool = False) -> list[Design]:
    seeds = (2, 3, 5) if quick else (2, 3, 5, 10)
    seed_sds = (0.01,) if quick else (0.005, 0.02)
    fold_sds = (0.02,) if quick else (0.01, 0.05)
    rhos = (0.0, 0.8)
    folds = ((5, 4),) if quick else ((5, 4), (5,))
    return [Design(n, s, f, r, fo) for n, s, f, r, fo in itertools.product(seeds, seed_sds, fold_sds, rhos, folds)]


FPR_COLUMNS = ("delta_fwer", "delta_fpr", "planned_fwer", "beats_fwer", "worse_fwer", "best_fwer")


def markdown(rows: list[tuple[Design, dict[str, float]]], tables: int, effects: tuple[float, ...]) -> str:
    sd = math.sqrt(ALPHA * (1 - ALPHA) / tables)
    power_cols = [f"{v}_power_{k:g}" for k in effects for v in ("delta", "planned", "beats", "best")]
    head = (["seeds", "seed sd", "fold sd", "ρ", "folds"] + [c.replace("_", " ") for c in FPR_COLUMNS]
            + ["Δ unadjusted fwer"] + [c.replace("_power_", " power ") + "σ" for c in power_cols])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    rates = []
    for d, r in rows:
        rates += [r[c] for c in FPR_COLUMNS]
        cells = [str(d.seeds), f"{d.seed_sd:g}", f"{d.fold_sd:g}", f"{d.rho:g}", "+".join(map(str, d.folds))]
        cells += [f"{r[c]:.3f}" for c in FPR_COLUMNS] + [f"{r['delta_fwer_unadjusted']:.3f}"]
        cells += [f"{r[c]:.2f}" for c in power_cols]
        lines.append("| " + " | ".join(cells) + " |")
    rates = np.array(rates)
    b2, b3 = ALPHA + 2 * sd, ALPHA + 3 * sd
    summary = (f"{tables:,} simulated tables per row; a rate of exactly 0.05 has binomial sd {sd:.4f}. "
               f"False-positive rates checked: {rates.size}; largest {rates.max():.3f}; above 0.05 + 2 sd "
               f"({b2:.3f}): {int((rates > b2).sum())} (chance alone at 0.05 would give ~{0.023 * rates.size:.0f}); "
               f"above 0.05 + 3 sd ({b3:.3f}): {int((rates > b3).sum())}.")
    return summary + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=2000, help="simulated tables per grid point (default 2000)")
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    effects = (2.0, 4.0)
    rows = []
    t0 = time.perf_counter()
    designs = grid(args.quick)
    for i, d in enumerate(designs):
        rows.append((d, run_point(d, args.tables, args.seed + i, effects)))
        print(f"[{i + 1}/{len(designs)}] {d} {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    text = markdown(rows, args.tables, effects)
    print(text)
    if args.out:
        from pathfm.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
