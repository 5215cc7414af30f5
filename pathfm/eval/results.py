"""Summaries of evaluation rows: statistics over folds, the headline scalars and the printed table.

The rows themselves (``source, backbone, task, probe, fold, metric, value, step, n_train, n_test``), their
file and its writer belong to :mod:`pathfm.results`. With several seeds,
``fold = seed_index * n_folds + fold_index`` (folds stay unique per evaluation).
"""

from __future__ import annotations

import numpy as np

BACKBONE_ORDER = ("trained", "random_init", "color_histogram")


def summary_stats(df):
    """Mean, standard deviation and count of every (task, probe, backbone, metric) over folds."""
    import polars as pl

    return (
        df.group_by(["task", "probe", "backbone", "metric"], maintain_order=True)
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").std(ddof=1).fill_null(0.0).alias("std"),
             pl.len().alias("n"))
        .sort(["task", "probe", "backbone", "metric"])
    )


def headline_metrics(df) -> dict[str, float]:
    """Scalars for sweeps and logs: ``eval/<task>/<probe>/<metric>`` (trained backbone, mean over folds),
    the baselines as ``eval/<task>/<probe>/<backbone>/balanced_accuracy``, and
    ``eval/mean_balanced_accuracy`` = mean over tasks of the linear-probe balanced accuracy (knn if no linear)."""
    out: dict[str, float] = {}
    stats = summary_stats(df)
    for r in stats.iter_rows(named=True):
        if r["backbone"] == "trained":
            out[f"eval/{r['task']}/{r['probe']}/{r['metric']}"] = r["mean"]
        elif r["metric"] == "balanced_accuracy":
            out[f"eval/{r['task']}/{r['probe']}/{r['backbone']}/balanced_accuracy"] = r["mean"]
    per_task = []
    for task in stats["task"].unique(maintain_order=True).to_list():
        for probe in ("linear", "knn", "torch_linear"):
            key = f"eval/{task}/{probe}/balanced_accuracy"
            if key in out:
                per_task.append(out[key])
                break
    if per_task:
        out["eval/mean_balanced_accuracy"] = float(np.mean(per_task))
    return out


def format_summary(df, diagnostics: list[dict] | None = None) -> str:
    """A plain-text table: per task and probe, balanced accuracy (mean ± sd over folds) of the trained
    backbone with accuracy and macro-F1, beside the random-init and colour-histogram baselines."""
    stats = summary_stats(df)
    cell = {(r["task"], r["probe"], r["backbone"], r["metric"]): (r["mean"], r["std"], r["n"])
            for r in stats.iter_rows(named=True)}
    tasks = stats["task"].unique(maintain_order=True).to_list()
    probes = stats["probe"].unique(maintain_order=True).to_list()
    present = [b for b in BACKBONE_ORDER if b in set(stats["backbone"].to_list())]

    def fmt(key):
        v = cell.get(key)
        return "-" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"

    header = ["task", "probe", "folds", "bal.acc (trained)", "accuracy", "macro-F1"]
    header += [f"bal.acc ({b})" for b in present if b != "trained"]
    lines = []
    for t in tasks:
        for p in probes:
            n = cell.get((t, p, "trained", "balanced_accuracy"), (0, 0, 0))[2]
            row = [t, p, str(n), fmt((t, p, "trained", "balanced_accuracy")), fmt((t, p, "trained", "accuracy")),
                   fmt((t, p, "trained", "macro_f1"))]
            row += [fmt((t, p, b, "balanced_accuracy")) for b in present if b != "trained"]
            lines.append(row)
    text = _table(header, lines)
    if diagnostics:
        dh = ["task", "backbone", "dim", "RankMe", "uniformity"]
        dl = [[d["task"], d["backbone"], str(d["dim"]), f"{d['rankme']:.1f}", f"{d['uniformity']:.3f}"]
              for d in diagnostics]
        text += "\n\nlabel-free diagnostics (RankMe: effective rank, higher = less collapsed; "
        text += "uniformity: lower = more spread)\n" + _table(dh, dl)
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
