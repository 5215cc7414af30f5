"""The results schema, one owner: the two tidy row layouts with their column types, and the readers/writers
every part uses (``pathfm.eval`` writes evaluation rows, ``pathfm.sweeps.collect`` builds a sweep's rows,
``pathfm.analysis`` reads them; docs/architecture.md "Tidy result rows"). The files they live in are named by
:mod:`pathfm.records` (a run's or trial's ``eval.parquet``: ``RunFolder.eval``; a sweep's ``results.parquet``:
``SweepFolder.results``), which also reads ``sweep_meta.json`` (:func:`pathfm.records.read_sweep_meta`).

* Evaluation rows (``eval.parquet`` of a run, a trial or a sweep's reference): :data:`EVAL_SCHEMA`,
  unique by :data:`EVAL_KEY`; :func:`eval_frame` builds them, :func:`append_results` merges them into a
  file (locked, atomic; re-evaluating replaces rows instead of double-counting them).
* Sweep rows (``results.parquet``): :data:`SWEEP_SCHEMA` plus one ``param.<name>`` column per searched
  parameter or varying arm label; :func:`sweep_frame` types them.
* Columns a hand-made table may lack: :data:`SWEEP_COLUMN_DEFAULTS`, added by :func:`fill_defaults`.

Column types are named ``"str" | "int" | "float" | "bool"`` (:data:`POLARS_TYPES` maps them to polars).
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import polars as pl

# ------------------------------------------------------------------------------------------ row layouts
OBJECTIVE_METRIC = "eval/mean_balanced_accuracy"
REFERENCE_TRIAL_ID = "reference"  # trial_id (and trial_dir) of a sweep's reference rows (SweepFolder.reference_dir)
PARAM_PREFIX = "param."

EVAL_SCHEMA: dict[str, str] = {
    "source": "str", "backbone": "str", "task": "str", "probe": "str", "fold": "int", "metric": "str",
    "value": "float", "step": "int", "n_train": "int", "n_test": "int", "probe_seed": "int",
    "init_seed": "int",  # random_init rows: the untrained network's init seed (null for every other backbone)
}
EVAL_KEY = ["source", "backbone", "init_seed", "task", "probe", "fold", "metric", "step"]

SWEEP_SCHEMA: dict[str, str] = {
    "sweep": "str", "trial_id": "str", "arm": "str", "status": "str", "seed": "int", "kind": "str",
    "step": "int", "final": "bool", "task": "str", "probe": "str", "backbone": "str", "fold": "int",
    "metric": "str", "value": "float", "wall_time_s": "float", "gpu_hours": "float", "tiles_seen": "int",
    "trial_dir": "str", "stop_reason": "str", "probe_seed": "int",
}


# Columns a tidy table may leave out (a CSV made by hand, the eval.parquet of `pathfm eval`) and the value each
# then stands for; :func:`fill_defaults` adds them so every reader can rely on them.
SWEEP_COLUMN_DEFAULTS: dict[str, Any] = {
    "trial_id": "trial", "arm": None, "seed": None, "kind": "eval", "step": 0, "final": None, "task": "score",
    "probe": None, "backbone": "trained", "fold": 0, "status": None, "sweep": None,
}


def param_column(name: str) -> str:
    """The results column of a searched parameter or arm label: ``param.<name>``."""
    return f"{PARAM_PREFIX}{name}"


def polars_types() -> dict[str, Any]:
    """The polars type of each column type name."""
    import polars as pl

    return {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean}


def value_type(values: list[Any]) -> str:
    """The column type that holds all ``values`` (None ignored): bool, int, float (ints and floats mixed),
    else str; ``float`` when there is no value."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "float"
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float"
    return "str"


def coerce(v: Any, dtype: str) -> Any:
    """``v`` as a value of column type ``dtype`` (a non-string in a str column becomes its JSON text)."""
    if v is None:
        return None
    if dtype == "float":
        return float(v)
    if dtype == "int":
        return int(v)
    if dtype == "str" and not isinstance(v, str):
        return json.dumps(v)
    return v


def typed_frame(rows: list[dict], schema: dict[str, str]) -> pl.DataFrame:
    """A polars frame of ``rows`` with exactly the columns and types of ``schema`` (column -> type name)."""
    import polars as pl

    types = polars_types()
    pl_schema = {k: types[v] for k, v in schema.items()}
    return pl.DataFrame(rows, schema=pl_schema, orient="row") if rows else pl.DataFrame(schema=pl_schema)


def eval_frame(rows: list[dict]) -> pl.DataFrame:
    """Evaluation rows (:data:`EVAL_SCHEMA`) as a typed frame."""
    return typed_frame(rows, EVAL_SCHEMA)


def sweep_frame(rows: list[dict], param_names: list[str]) -> pl.DataFrame:
    """Sweep rows as a typed frame: :data:`SWEEP_SCHEMA` plus ``param.<name>`` per parameter, each typed by
    its values (:func:`value_type`); the rows' values are coerced in place."""
    schema = dict(SWEEP_SCHEMA)
    for name in param_names:
        col = param_column(name)
        dtype = value_type([r.get(col) for r in rows])
        schema[col] = dtype
        for r in rows:
            r[col] = coerce(r.get(col), dtype)
    for r in rows:
        for k, t in SWEEP_SCHEMA.items():
            r[k] = coerce(r.get(k), t) if t in ("float", "int") else r.get(k)
    return typed_frame(rows, schema)


def fill_defaults(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Add the columns of :data:`SWEEP_COLUMN_DEFAULTS` that ``lf`` lacks (typed as :data:`SWEEP_SCHEMA`; an
    eval.parquet's ``source`` names its trial) and cast the key columns, so every later step can rely on them."""
    import polars as pl

    names = set(lf.collect_schema().names())
    types = polars_types()
    defaults = {k: pl.lit(v, dtype=types[SWEEP_SCHEMA[k]]) for k, v in SWEEP_COLUMN_DEFAULTS.items()}
    if "source" in names:  # eval.parquet of `pathfm eval`: one "trial" per evaluated source
        defaults["trial_id"] = pl.col("source").cast(pl.String)
    add = [expr.alias(name) for name, expr in defaults.items() if name not in names]
    if add:
        lf = lf.with_columns(add)
    return lf.with_columns(
        pl.col("trial_id").cast(pl.String),
        pl.col("arm").cast(pl.String),
        pl.col("fold").fill_null(0).cast(pl.Int64),
        pl.col("step").fill_null(0).cast(pl.Int64),
        pl.col("value").cast(pl.Float64),
    )


# ------------------------------------------------------------------------------------ readers / writers
@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on the file's folder (no lock file left behind), so concurrent writers serialise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_results(path: str | Path, df: pl.DataFrame) -> Path:
    """Merge evaluation rows ``df`` into the Parquet file at ``path`` (created if missing): rows with the
    same :data:`EVAL_KEY` are replaced; locked, written atomically."""
    import polars as pl

    from pathfm.io import read_parquet, write_parquet

    path = Path(path)
    with folder_lock(path):
        if path.exists():
            old = read_parquet(path, "results file", "move it aside (the new rows then start a new file) or write "
                               "them elsewhere (--out)")
            if "init_seed" not in old.columns:  # written before random init had several init seeds
                old = old.with_columns(pl.lit(None, dtype=pl.Int64).alias("init_seed"))
            old = old.join(df.select(EVAL_KEY).unique(), on=EVAL_KEY, how="anti", nulls_equal=True)
            df = pl.concat([old, df], how="diagonal_relaxed")
        write_parquet(df, path, "results")
    return path
