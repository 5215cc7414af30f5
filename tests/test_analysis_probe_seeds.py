"""Probe-seed repeats: per-seed rows are averaged per fold index before the bootstrap (not counted as extra
folds), and the table's variance label says how many probe seeds each fold averages."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pathfm.analysis.load import fold_scores
from pathfm.analysis.table import build_table, variance_label

N_FOLDS, PROBE_SEEDS = 5, (0, 1, 2)


def _rows(rng) -> list[dict]:
    """Rows as `evaluate(..., seeds=[0, 1, 2])` writes them: fold = seed_index * n_folds + fold_index."""
    return [dict(sweep="s", trial_id=f"{a}-{s}", arm=a, status="TERMINATED", seed=s, kind="eval", step=1, final=True,
                 task="crc", probe="linear", backbone="trained", fold=si * N_FOLDS + f, probe_seed=ps,
                 metric="balanced_accuracy", value=float(rng.uniform(0.6, 0.9)))
            for a in ("base", "kde") for s in range(3) for si, ps in enumerate(PROBE_SEEDS) for f in range(N_FOLDS)]


def test_probe_seeds_are_averaged_per_fold_within_each_seed():
    df = pl.DataFrame(_rows(np.random.default_rng(0)))
    folds = fold_scores(df)
    assert folds.height == 2 * 3 * N_FOLDS  # arms x pretraining seeds x folds, not x probe seeds
    assert set(folds["n_probe_seeds"].to_list()) == {3}
    one = df.filter((pl.col("trial_id") == "kde-1") & (pl.col("fold") % N_FOLDS == 2))
    got = folds.filter((pl.col("trial_id") == "kde-1") & (pl.col("fold") == 2))["value"].item()
    assert got == pytest.approx(one["value"].mean())
    table = build_table(folds, baseline="base")
    assert table.variance_note() == ("Student-t over pretraining seeds (3 per arm); 5 evaluation folds per task and 3 "
                                     "probe seeds per fold averaged within each seed")


def test_results_without_probe_seeds_keep_their_folds_and_label():
    rows = [{k: v for k, v in r.items() if k != "probe_seed"} for r in _rows(np.random.default_rng(1))]
    folds = fold_scores(pl.DataFrame(rows))
    assert folds.height == 2 * 3 * N_FOLDS * len(PROBE_SEEDS) and "n_probe_seeds" not in folds.columns
    assert variance_label([3], [5], [1]) == variance_label([3], [5])


def test_evaluation_rows_carry_their_probe_seed():
    from pathfm.eval.evaluation import probe_rows
    from pathfm.eval.features import color_histogram_features
    from pathfm.eval.tasks import get_task
    from pathfm.eval.tiles import load_samples

    smp = load_samples(get_task("crc"))
    rows = probe_rows({"color_histogram": color_histogram_features(smp.images)}, smp, ["knn"], [0, 7],
                      source="test", step=0)
    n = smp.task.spec.n_folds
    assert {(r["probe_seed"], r["fold"] // n) for r in rows} == {(0, 0), (7, 1)}


def test_collect_keeps_the_probe_seed_of_a_trials_eval_rows(tmp_path):
    from pathfm.io import atomic_write_json
    from pathfm.results import eval_frame
    from pathfm.sweeps.collect import collect

    d = tmp_path / "sw" / "trial_a_00000"
    d.mkdir(parents=True)
    eval_frame([dict(source="x", backbone="trained", task="crc", probe="linear", fold=si * 2 + f, metric="balanced_accuracy",
                     value=0.5 + 0.1 * si, step=3, n_train=10, n_test=5, probe_seed=ps)
                for si, ps in enumerate((0, 4)) for f in range(2)]).write_parquet(d / "eval.parquet")
    atomic_write_json(d / "trial.json", {"trial_id": "a_00000", "index": 0, "seed": 0, "params": {}, "status": "TERMINATED",
                                         "final_step": 3})
    df = pl.read_parquet(collect(tmp_path / "sw"))
    ev = df.filter(pl.col("kind") == "eval").sort("fold")
    assert ev["probe_seed"].to_list() == [0, 0, 4, 4]
    folds = fold_scores(df)
    assert folds["fold"].to_list() == [0, 1] and folds["value"].to_list() == pytest.approx([0.55, 0.55])
