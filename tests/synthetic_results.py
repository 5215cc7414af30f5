"""Synthetic results frames in the tidy schema, with known ground truth (tests and benchmarks/analysis.py).

Scores follow a saturating power law in the number of slides, ``y = a - b * n_slides**(-c)``, plus an
arm effect, a task offset, seed noise and fold noise; each trial also logs a train ``acceptance_rate``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pathfm.results import param_column, sweep_frame


def synthetic_results(
    arms: dict[str, float] | None = None,
    seeds: int = 3,
    tasks: tuple[str, ...] = ("crc", "osteo", "mhist"),
    folds: int = 3,
    n_slides: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000),
    steps: tuple[int, ...] = (100, 200),
    a: float = 0.9,
    b: float = 0.6,
    c: float = 0.5,
    seed_sd: float = 0.01,
    fold_sd: float = 0.01,
    seed: int = 0,
    sweep: str = "synthetic",
) -> pl.DataFrame:
    """Tidy ``results.parquet`` rows (:data:`pathfm.results.SWEEP_SCHEMA` without the trial-folder columns, plus
    ``param.n_slides`` and ``param.kde_weight``). ``arms`` maps arm name -> additive effect on every score."""
    arms = arms if arms is not None else {"baseline": 0.0, "kde": 0.02, "no_hed": -0.01}
    rng = np.random.default_rng(seed)
    task_offset = {t: rng.normal(0, 0.03) for t in tasks}
    rows: list[dict] = []
    add = lambda **r: rows.append(r)  # noqa: E731

    t = 0
    for arm, effect in arms.items():
        kde_w = 0.1 if "kde" in arm else 0.0
        for ns in n_slides:
            for s in range(seeds):
                trial = f"{arm}_n{ns}_s{s}_{t:05d}"
                t += 1
                seed_eff = rng.normal(0, seed_sd)
                acc = float(np.clip(0.5 + 0.3 * rng.random(), 0, 1))
                base = dict(sweep=sweep, trial_id=trial, arm=arm, status="TERMINATED", seed=s,
                            wall_time_s=60.0 * ns ** 0.5, gpu_hours=0.01 * ns ** 0.5, tiles_seen=1000 * ns,
                            **{param_column("n_slides"): ns, param_column("kde_weight"): kde_w})
                for i, st in enumerate(steps):
                    final = i == len(steps) - 1
                    add(**base, kind="train", step=st, final=final, metric="acceptance_rate", value=acc)
                    add(**base, kind="train", step=st, final=final, metric="loss", value=float(5.0 - st / 100 + rng.normal(0, 0.1)))
                    frac = (i + 1) / len(steps)
                    for task in tasks:
                        for f in range(folds):
                            mu = a - b * ns ** (-c) + effect + task_offset[task] + seed_eff
                            for bb, shift in (("trained", 0.0), ("random_init", -0.3)):
                                v = (mu + shift) * (0.9 + 0.1 * frac) + rng.normal(0, fold_sd)
                                add(**base, kind="eval", step=st, final=final, task=task, probe="linear",
                                    backbone=bb, fold=f, metric="balanced_accuracy", value=float(np.clip(v, 0, 1)))
    folder_only = ("trial_dir", "stop_reason")  # no trial folders behind synthetic rows
    return sweep_frame(rows, ["n_slides", "kde_weight"]).drop(folder_only)
