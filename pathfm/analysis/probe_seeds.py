"""Probe-seed repeats (eva-style repeated evaluation) kept apart from pretraining seeds.

An evaluation with several fold/probe seeds (``pathfm eval --seeds 0 1 2``, a sweep's ``eval.probe_seeds``)
writes one row per (probe seed, fold) with ``fold = seed_index * n_folds + fold_index`` and the seed in
``probe_seed``. The repeats re-split the same tiles, so they are not independent evaluation folds: the
analysis averages them per fold index *before* the bootstrap (which resamples pretraining seeds and folds),
and the table says how many probe seeds each fold averages.
"""

from __future__ import annotations

import polars as pl


def fold_within_probe_seed(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Renumber ``fold`` to the fold index within its probe seed (``fold - min fold`` of that trial, task and
    probe seed), so grouping by fold averages the probe seeds; rows without ``probe_seed`` are unchanged."""
    if "probe_seed" not in rows.collect_schema().names():
        return rows
    first = pl.col("fold").min().over(["trial_id", "task", "probe_seed"])
    return rows.with_columns(
        pl.when(pl.col("probe_seed").is_not_null()).then(pl.col("fold") - first).otherwise(pl.col("fold")).alias("fold"))


def probe_seeds_per_task(folds: pl.DataFrame) -> dict[str, int]:
    """The fewest probe seeds any fold of a task averages (1 for results without probe seeds)."""
    if "n_probe_seeds" not in folds.columns:
        return {}
    return dict(folds.group_by("task", maintain_order=True).agg(pl.col("n_probe_seeds").min()).iter_rows())
