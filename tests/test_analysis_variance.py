"""Tables and figures say which variance their intervals reflect: pretraining seeds (the replicates), with the
evaluation folds averaged within each seed."""

from __future__ import annotations

import numpy as np
import polars as pl

from pathfm.analysis.load import fold_scores
from pathfm.analysis.table import build_table, variance_label
from pathfm.analysis.table_plot import figure_caption


def test_variance_label_names_the_sources():
    assert variance_label([3, 3], [5, 5]) == ("Student-t over pretraining seeds (3 per arm); 5 evaluation folds per "
                                              "task averaged within each seed")
    assert variance_label([2, 3], [1, 1]) == "Student-t over pretraining seeds (2-3 per arm)"
    assert variance_label([1, 1], [5]).startswith("no interval: one pretraining seed")


def test_table_and_figure_captions_carry_the_label():
    rng = np.random.default_rng(0)
    rows = [dict(sweep="s", trial_id=f"{a}-{s}", arm=a, status="TERMINATED", seed=s, kind="eval", step=1, final=True,
                 task=t, probe="linear", backbone="trained", fold=f, metric="balanced_accuracy",
                 value=float(rng.uniform(0.6, 0.9)))
            for a in ("base", "kde") for s in range(3) for t, n_folds in (("crc", 5), ("osteo", 4)) for f in range(n_folds)]
    table = build_table(fold_scores(pl.DataFrame(rows)), baseline="base")
    label = "Student-t over pretraining seeds (3 per arm); 4-5 evaluation folds per task averaged within each seed"
    assert table.variance_note() == label
    assert label in table.to_markdown() and label in figure_caption(table)
