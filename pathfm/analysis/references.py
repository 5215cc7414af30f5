"""The honesty baselines of a results table: the rows of ``random_init`` (the architecture untrained, at each
of its init seeds) and ``color_histogram``, selected like the trained rows they stand beside, as fold scores
for :func:`pathfm.analysis.table.build_table` and as per-task floors for :func:`pathfm.analysis.load.normalise`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import ResultsError, Selection, fold_scores
from pathfm.analysis.stats import t_interval
from pathfm.results import PARAM_PREFIX, REFERENCE_TRIAL_ID, SWEEP_SCHEMA

REFERENCE_BACKBONES = ("random_init", "color_histogram")  # the honesty baselines (pathfm.eval)
_PER_TRIAL_COLUMNS = {"arm", "seed", "trial_id", "trial_dir", "status", "replicate", "stop_reason"}


def reference_selection(sel: Selection, backbone: str) -> Selection:
    """``sel`` for a reference backbone: the same kind, probe, metric, step and tasks, without the filters on
    per-trial columns (arm, seed, searched params): a sweep's reference rows (``trial_id = "reference"``,
    evaluated once per sweep) have those null, and they hold for every trial of the architecture."""
    keep = {k: v for k, v in sel.filters.items()
            if k not in _PER_TRIAL_COLUMNS and not k.startswith(PARAM_PREFIX) and not _is_param_alias(k)}
    return Selection(**{**sel.__dict__, "backbone": backbone, "filters": keep})


def _is_param_alias(name: str) -> bool:
    """A filter written without the ``param.`` prefix (``--where n_slides=3``) names a searched param unless it
    is one of the tidy schema's own columns."""
    schema_cols = {*SWEEP_SCHEMA, "source", "results_file"}  # + the eval rows' source and scan_results' column
    return name not in schema_cols and name not in _PER_TRIAL_COLUMNS




def reference_fold_scores(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    sel: Selection,
    backbones: Sequence[str] = REFERENCE_BACKBONES,
) -> tuple[pl.DataFrame | None, list[str]]:
    """The honesty baselines' scores per fold: ``reference`` (the backbone: ``random_init``,
    ``color_histogram``), ``replicate`` (the random init's init seed), ``task``, ``fold``, ``metric``,
    ``value``, and notes on what could not be used.

    A sweep's reference rows (``trial_id = "reference"``; random init at each of its init seeds, in the
    ``seed`` column) when there are any; else the rows trials evaluated themselves (one random init at
    :data:`pathfm.eval.backbones.RANDOM_INIT_SEED`), which must agree (one untrained network of one
    architecture and input normalisation on the same folds): when they differ (several architectures, e.g.
    eval.parquet of several sources), there is no single reference and that backbone is left out with a
    note. ``(None, notes)`` when nothing is left."""
    out, notes = [], []
    for b in backbones:
        try:
            folds = fold_scores(source, reference_selection(sel, b))
        except ResultsError:
            continue
        sweep_level = folds.filter(pl.col("trial_id") == REFERENCE_TRIAL_ID)
        if not sweep_level.is_empty():  # the replicate is the init seed ("reference" before init seeds were kept)
            folds = sweep_level.with_columns(
                pl.when(pl.col("replicate") == REFERENCE_TRIAL_ID).then(pl.lit("0")).otherwise(pl.col("replicate"))
                .alias("replicate"))
        else:  # every trial evaluated the same untrained network
            folds = folds.with_columns(pl.lit("0").alias("replicate"))
        spread = (folds.group_by(["replicate", "task", "fold"])
                  .agg((pl.col("value").max() - pl.col("value").min()).alias("d")))
        if spread["d"].max() > 1e-9:
            notes.append(f"the {b} rows differ between trials (several architectures or input normalisations), so "
                         f"there is no single {b} reference; compare them with --backbone all")
            continue
        out.append(folds.group_by(["replicate", "task", "fold"], maintain_order=True)
                   .agg(pl.col("value").mean(), pl.col("metric").first())
                   .with_columns(pl.lit(b).alias("reference")))
    if not out:
        return None, notes
    return pl.concat(out).select("reference", "replicate", "task", "fold", "metric", "value"), notes


def reference_scores(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    sel: Selection,
    backbone: str = "random_init",
) -> pl.DataFrame:
    """Per-task mean score of a reference backbone (the floor for :func:`normalise`): ``task, value``."""
    folds = fold_scores(source, reference_selection(sel, backbone))
    return folds.group_by("task").agg(pl.col("value").mean()).sort("task")


def reference_levels(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    sel: Selection,
    level: float = 0.95,
) -> list[dict]:
    """Each honesty baseline's score averaged over the selected tasks like a trial's (folds, then tasks, per
    init seed), with the t interval over random init's init seeds: ``[{reference, mean, ci_low, ci_high,
    n_init_seeds}]`` (empty without reference rows). For lines beside curves of trials."""
    refs, _ = reference_fold_scores(source, sel)
    if refs is None:
        return []
    n_tasks = refs["task"].n_unique()
    per_seed = (refs.group_by(["reference", "replicate", "task"]).agg(pl.col("value").mean())
                .group_by(["reference", "replicate"]).agg(pl.col("value").mean(), pl.len().alias("n"))
                .filter(pl.col("n") == n_tasks))
    out = []
    for name in [r for r in REFERENCE_BACKBONES if r in per_seed["reference"].to_list()]:
        values = per_seed.filter(pl.col("reference") == name)["value"].to_numpy()
        m, lo, hi, n = (float(v) for v in t_interval(np.asarray(values, dtype=float), level))
        out.append({"reference": name, "mean": m, "ci_low": lo, "ci_high": hi, "n_init_seeds": int(n)})
    return out
