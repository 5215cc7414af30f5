"""Tidy result rows (the one schema the analysis reads), atomic Parquet appends and the printed summary.

Row: ``source, backbone, task, probe, fold, metric, value, step, n_train, n_test`` (docs/architecture.md).
With several seeds, ``fold = seed_index * n_folds + fold_index`` (folds stay unique per evaluation).
Appending replaces earlier rows with the same (source, backbone, task, probe, fold, metric, step), so
re-running an evaluation updates it instead of double-counting it.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

SCHEMA = {
    "source": "str", "backbone": "str", "task": "str", "probe": "str", "fold": "int", "metric": "str",
    "value": "float", "step": "int", "n_train": "int", "n_test": "int",
}
KEY = ["source", "backbone", "task", "probe", "fold", "metric", "step"]
BACKBONE_ORDER = ("trained", "random_init", "color_histogram")


def rows_to_frame(rows: list[dict]):
    import polars as pl

    types = {"str": pl.Utf8, "int": pl.Int64, "float": pl.Float64}
    schema = {k: types[v] for k, v in SCHEMA.items()}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock on the file's folder (no lock file left behind), so concurrent appends serialise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_results(path: str | Path, df) -> Path:
    """Merge ``df`` into the Parquet file at ``path`` (created if missing): locked, written atomically."""
    import polars as pl

    from pathfm.io import atomic_path

    path = Path(path)
    with _locked(path):
        if path.exists():
            old = pl.read_parquet(path)
            old = old.join(df.select(KEY).unique(), on=KEY, how="anti", nulls_equal=True)
            df = pl.concat([old, df], how="diagonal_relaxed")
        with atomic_path(path) as tmp:
            df.write_parquet(tmp)
    return path


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
