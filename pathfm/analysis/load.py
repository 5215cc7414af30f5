"""Load tidy result rows (``results.parquet`` of sweeps, ``eval.parquet``, or a CSV in the same schema)
and reduce them to one score per (arm, seed, task, fold).

The schema is the one in ``docs/architecture.md`` ("Tidy result rows"). Everything here is polars, lazy
until the reduction is collected, so 10^5-10^6 rows load and reduce in well under a second.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal, Sequence

import polars as pl

from pathfm.analysis.probe_seeds import fold_within_probe_seed
from pathfm.errors import PathfmError
from pathfm.records import SweepFolder, read_sweep_meta
from pathfm.results import PARAM_PREFIX, fill_defaults
REQUIRED = ("metric", "value")
ANY = "all"  # a selection value that disables that filter
# The arm of a selected row, structured, beside its display label ``arm`` (``base, kde_weight=0.1``), so no
# reader parses the label back: ARM_NAME is the arm as the results store it (else the evaluated source, the
# sweep, the trial) and ARM_KNOBS the names that the label appends to it (``["kde_weight"]``).
ARM_NAME = "arm_name"
ARM_KNOBS = "arm_knobs"


class ResultsError(PathfmError):
    """A results file or selection that cannot be analysed (names the file/column and the fix)."""


@dataclass(frozen=True)
class Selection:
    """Which rows become scores. ``None`` or ``"all"`` disables a filter.

    Defaults: evaluation rows of the trained backbone, linear probe, balanced accuracy, the final step.
    ``metric`` may name several metrics (e.g. balanced accuracy, Dice and Pearson r of a mixed benchmark);
    each task must then carry exactly one of them.
    """

    kind: str | None = "eval"
    backbone: str | None = "trained"
    probe: str | None = "linear"
    metric: str | Sequence[str] = "balanced_accuracy"
    step: Literal["final", "best", "last"] = "final"
    tasks: Sequence[str] | None = None
    statuses: Sequence[str] | None = ("TERMINATED", "STOPPED", "RUNNING")
    filters: dict[str, str] = field(default_factory=dict)
    arm_exclude: Sequence[str] = ()  # searched params left out of arm labels (e.g. the x of a curve)

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)


def resolve_results_path(path: str | Path) -> Path:
    """A results file, or a sweep folder that contains ``results.parquet``."""
    p = Path(path)
    if p.is_dir():
        cand = SweepFolder(p).results
        if not cand.exists():
            raise ResultsError(
                f"{p}: no {cand.name} in this folder; run `pathfm sweep collect {p}` first "
                "or pass the results file itself"
            )
        return cand
    if not p.exists():
        raise ResultsError(f"{p}: results file not found")
    if p.suffix not in (".parquet", ".csv"):
        raise ResultsError(f"{p}: expected a .parquet or .csv results file (tidy schema), got '{p.suffix}'")
    return p


def scan_results(paths: str | Path | Iterable[str | Path]) -> pl.LazyFrame:
    """Lazily read one or many results files / sweep folders into one frame (columns unioned).

    A column ``results_file`` records where each row came from; ``sweep`` is filled from the folder name
    when a file lacks it.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for raw in paths:
        p = resolve_results_path(raw)
        lf = pl.scan_parquet(p) if p.suffix == ".parquet" else pl.scan_csv(p, infer_schema_length=10_000)
        try:
            names = lf.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as e:
            kind = "Parquet" if p.suffix == ".parquet" else "CSV"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ResultsError(f"{p}: not readable as a {kind} results table ({first}); give a results.parquet "
                               "written by pathfm (`pathfm sweep collect DIR` rebuilds a sweep's) or a tidy CSV")
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise ResultsError(
                f"{p}: missing column(s) {missing}; a results table needs at least {list(REQUIRED)} "
                "(see 'Tidy result rows' in docs/architecture.md)"
            )
        lf = lf.with_columns(pl.lit(str(p)).alias("results_file"))
        if "sweep" not in names:
            lf = lf.with_columns(pl.lit(p.parent.name).alias("sweep"))
        frames.append(lf)
    if not frames:
        raise ResultsError("no results given; pass at least one results.parquet or sweep folder")
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def sweep_meta_of(paths: str | Path | Iterable[str | Path]) -> dict:
    """``sweep_meta.json`` next to the (first) results file that has one, else ``{}``
    (:func:`pathfm.records.read_sweep_meta`, whose error an unreadable file raises, as a ResultsError)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for raw in paths:
        folder = resolve_results_path(raw).parent
        try:
            meta = read_sweep_meta(folder)
        except PathfmError as e:
            raise ResultsError(str(e)) from None
        if meta:
            return meta
    return {}




def read_analysis_hints(paths: str | Path | Iterable[str | Path]) -> dict:
    """The study's analysis hints (``analysis`` of ``sweep_meta.json``, recorded from the study by
    ``pathfm ablate``, or of an older sweep's ``study_plan.json``): e.g. ``table_order``, ``x``,
    ``group_by``, ``plot_against``. ``{}`` if none."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for raw in paths:
        folder = resolve_results_path(raw).parent
        sweep = SweepFolder(folder)
        for f in (sweep.meta, sweep.study_plan):  # study_plan.json: sweeps started before meta held the hints
            if f.exists():
                try:
                    hints = json.loads(f.read_text()).get("analysis")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(hints, dict) and hints:
                    return hints
    return {}


def param_columns(columns: Iterable[str]) -> list[str]:
    return sorted(c for c in columns if c.startswith(PARAM_PREFIX))


def skip_absent_filters(lf: pl.LazyFrame, sel: Selection, where: str) -> Selection:
    """A kind/backbone/probe filter on a column the table does not have (or holds no value in) is
    dropped with a one-line note: any tidy table (arm, seed, task, metric, value) can be analysed."""
    names = lf.collect_schema().names()
    skipped = {}
    for col in ("kind", "backbone", "probe"):
        want = getattr(sel, col)
        if want in (None, ANY):
            continue
        if col not in names or lf.select(pl.col(col).is_not_null().any()).collect().item() is not True:
            skipped[col] = None
            print(f"note: {where} has no '{col}' column; the filter {col} == '{want}' is skipped", file=sys.stderr)
    return replace(sel, **skipped) if skipped else sel


def _check_selection(lf: pl.LazyFrame, sel: Selection, where: str) -> None:
    """Fail early, naming the values that do exist, when a filter matches nothing."""
    checks = [("kind", sel.kind), ("backbone", sel.backbone), ("probe", sel.probe)]
    sample = lf.select("kind", "backbone", "probe", "metric", "task").unique().collect()
    for col, want in checks:
        if want in (None, ANY):
            continue
        have = sorted(str(v) for v in sample[col].drop_nulls().unique().to_list())
        if want not in have:
            raise ResultsError(f"{where}: no rows with {col} == '{want}' (present: {have}); pass --{col} with one of these or 'all'")
    have_metrics = sorted(sample["metric"].drop_nulls().unique().to_list())
    missing = [m for m in sel.metrics if m not in have_metrics]
    if len(missing) == len(sel.metrics):
        raise ResultsError(
            f"{where}: metric {sel.metrics} not found (present: {have_metrics}); pass --metric with one of these"
        )
    if sel.tasks:
        have_tasks = sorted(str(t) for t in sample["task"].drop_nulls().unique().to_list())
        bad = [t for t in sel.tasks if t not in have_tasks]
        if bad:
            raise ResultsError(f"{where}: task(s) {bad} not in the results (present: {have_tasks})")


def in_arms(arms: set) -> pl.Expr:
    """True for rows whose ``arm`` is one of ``arms`` (``None`` in ``arms``: rows without an arm)."""
    named = sorted(a for a in arms if a is not None)
    applies = pl.col("arm").is_in(named) if named else pl.lit(False)
    return applies | pl.col("arm").is_null() if None in arms else applies


def arm_label_expr(params: dict[str, set], floats: Sequence[str] = ()) -> pl.Expr:
    """``arm`` (ablations) followed by ``name=value`` of each searched param that varies within that arm
    (``params``: param -> the arm values, ``None`` for rows without an arm, in which it varies); without
    an arm and without varying params, the sweep name (all trials are replicates of one arm)."""
    fallback = pl.coalesce(pl.col("arm"), pl.col("sweep").cast(pl.String), pl.col("trial_id"))
    if not params:
        return fallback.alias("arm")

    def value(c: str) -> pl.Expr:  # floats to 6 significant digits: lr=0.000286752, not 0.000286751749659508
        col = pl.col(c).round_sig_figs(6) if c in floats else pl.col(c)
        return col.cast(pl.String).fill_null("None")

    parts = []
    for c, arms in params.items():
        applies = in_arms(arms)
        parts.append(pl.when(applies).then(pl.lit(f"{c[len(PARAM_PREFIX):]}=") + value(c)).otherwise(pl.lit(None)))
    from_params = pl.concat_str(parts, separator=", ", ignore_nulls=True)
    from_params = pl.when(from_params == "").then(pl.lit(None)).otherwise(from_params)
    label = pl.when(pl.col("arm").is_null()).then(pl.coalesce(from_params, fallback))
    return label.otherwise(pl.concat_str([pl.col("arm"), from_params], separator=", ", ignore_nulls=True)).alias("arm")


def arm_knobs_expr(params: dict[str, set]) -> pl.Expr:
    """The names of the searched params that :func:`arm_label_expr` appends to each row's label (a list)."""
    if not params:
        return pl.lit([], dtype=pl.List(pl.String)).alias(ARM_KNOBS)
    parts = []
    for c, arms in params.items():
        applies = in_arms(arms)
        parts.append(pl.when(applies).then(pl.lit(c[len(PARAM_PREFIX):])).otherwise(pl.lit(None, dtype=pl.String)))
    return pl.concat_list(parts).list.drop_nulls().alias(ARM_KNOBS)


def varying_params(lf: pl.LazyFrame) -> dict[str, set]:
    """Searched params that take more than one value within an arm (or among rows without an arm), with
    the arms (``None``: rows without one) in which they vary: they must be part of those arms' labels so
    that different settings never pool."""
    params = param_columns(lf.collect_schema().names())
    if not params:
        return {}
    counts = lf.group_by("arm").agg([pl.col(c).n_unique().alias(c) for c in params]).collect()
    out = {}
    for c in params:
        arms = set(counts.filter(pl.col(c) > 1)["arm"].to_list())
        if arms:
            out[c] = arms
    return out


def select_rows(lf: pl.LazyFrame, sel: Selection, where: str = "results") -> pl.LazyFrame:
    """Filter to the selected rows (no reduction yet); adds the ``arm`` label, its structured parts
    (:data:`ARM_NAME`, :data:`ARM_KNOBS`) and the ``replicate`` id."""
    sel = skip_absent_filters(lf, sel, where)
    lf = fill_defaults(lf)
    _check_selection(lf, sel, where)
    conds = [pl.col("metric").is_in(sel.metrics)]
    for col, want in (("kind", sel.kind), ("backbone", sel.backbone), ("probe", sel.probe)):
        if want not in (None, ANY):
            conds.append(pl.col(col) == want)
    if sel.tasks:
        conds.append(pl.col("task").is_in(list(sel.tasks)))
    if sel.statuses is not None:
        conds.append(pl.col("status").is_null() | pl.col("status").is_in(list(sel.statuses)))
    schema = lf.collect_schema()
    for col, want in sel.filters.items():
        key = col if col in schema else f"{PARAM_PREFIX}{col}"
        if key not in schema:
            raise ResultsError(f"{where}: filter column '{col}' not found (columns: {sorted(schema.names())})")
        if schema[key].is_numeric():
            try:
                conds.append(pl.col(key) == float(want))
                continue
            except ValueError:
                raise ResultsError(f"{where}: filter {col}={want}: '{key}' is numeric, '{want}' is not a number")
        conds.append(pl.col(key).cast(pl.String) == str(want))
    lf = lf.filter(pl.all_horizontal(conds))
    exclude = {c if c.startswith(PARAM_PREFIX) else PARAM_PREFIX + c for c in sel.arm_exclude}
    params = {c: arms for c, arms in varying_params(lf).items() if c not in exclude}
    if "source" in lf.collect_schema().names():  # eval.parquet: the evaluated source names the arm
        lf = lf.with_columns(pl.coalesce(pl.col("arm"), pl.col("source").cast(pl.String)).alias("arm"))
    floats = [c for c in params if schema[c].is_float()]
    fallback = pl.coalesce(pl.col("arm"), pl.col("sweep").cast(pl.String), pl.col("trial_id"))
    lf = lf.with_columns(fallback.alias(ARM_NAME), arm_knobs_expr(params))
    lf = lf.with_columns(arm_label_expr(params, floats))
    # with the backbone/probe filter off, rows that differ only in backbone or probe must not pool:
    # name them in the arm label when some task carries several
    for col, want in (("backbone", sel.backbone), ("probe", sel.probe)):
        if want in (None, ANY):
            several = lf.group_by("task").agg(pl.col(col).n_unique().alias("n")).select(pl.col("n").max()).collect().item()
            if several and several > 1:
                lf = lf.with_columns(pl.concat_str([pl.col("arm"), pl.lit(f", {col}="), pl.col(col).fill_null("None")]).alias("arm"),
                                     pl.concat_list([pl.col(ARM_KNOBS), pl.lit(col)]).alias(ARM_KNOBS))
    # the replicate of a trial: its seed, else the trial id (one trial = one replicate)
    return lf.with_columns(pl.coalesce(pl.col("seed").cast(pl.String), pl.col("trial_id")).alias("replicate"))


def pick_step(lf: pl.LazyFrame, how: Literal["final", "best", "last"]) -> pl.LazyFrame:
    """Keep one step per (trial, task): the row flagged ``final`` (falling back to the last step when a
    trial has none), the last step, or the step with the best fold-mean value (optimistic: say so)."""
    keys = ["trial_id", "task", "metric"]
    if how == "best":
        step_means = lf.group_by(keys + ["step"]).agg(pl.col("value").mean().alias("_m"))
        best = step_means.sort("_m", descending=True).group_by(keys).agg(pl.col("step").first().alias("_s"))
        return lf.join(best, on=keys).filter(pl.col("step") == pl.col("_s")).drop("_s")
    last = lf.group_by(keys).agg(
        pl.col("step").max().alias("_last"),
        pl.col("step").filter(pl.col("final").fill_null(False)).max().alias("_final"),
    )
    target = pl.col("_last") if how == "last" else pl.coalesce(pl.col("_final"), pl.col("_last"))
    return lf.join(last, on=keys).filter(pl.col("step") == target).drop("_last", "_final")


def as_lazy(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
) -> tuple[pl.LazyFrame, str]:
    """The results as a LazyFrame (files are scanned), and what to call them in error messages."""
    if isinstance(source, pl.DataFrame):
        return source.lazy(), "results"
    if isinstance(source, pl.LazyFrame):
        return source, "results"
    if isinstance(source, (str, Path)):
        return scan_results(source), str(source)
    paths = list(source)  # an iterator would be used up by naming it
    return scan_results(paths), ", ".join(str(s) for s in paths)


def fold_scores(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    sel: Selection | None = None,
    extra: Sequence[str] = (),
) -> pl.DataFrame:
    """One row per (arm, replicate, trial, task, fold): the selected metric at the selected step.

    Columns: ``arm, replicate, trial_id, task, metric, fold, value, arm_name, arm_knobs`` plus ``extra``
    columns (first value).
    """
    sel = sel or Selection()
    lf, where = as_lazy(source)
    selected = select_rows(lf, sel, where)
    rows = fold_within_probe_seed(pick_step(selected, sel.step))  # probe-seed repeats: averaged per fold
    has_probe_seeds = "probe_seed" in rows.collect_schema().names()
    out = (
        rows.group_by(["arm", "replicate", "trial_id", "task", "fold"], maintain_order=True)
        .agg(
            pl.col("value").mean(),
            pl.col("metric").first(),
            pl.col("metric").n_unique().alias("_n_metrics"),
            *([pl.col("probe_seed").n_unique().alias("n_probe_seeds")] if has_probe_seeds else []),
            pl.col(ARM_NAME).first(),
            pl.col(ARM_KNOBS).first(),
            *[pl.col(c).first() for c in extra],
        )
        .collect()
    )
    if out.is_empty():
        raise ResultsError(f"{where}: the selection {sel} matched no rows")
    multi = out.filter(pl.col("_n_metrics") > 1)
    if not multi.is_empty():
        task = multi["task"][0]
        raise ResultsError(
            f"{where}: task '{task}' carries several of the metrics {sel.metrics}; pass one --metric per task"
        )
    # keep the tasks in the order they first appear (the column order of a published table)
    order = selected.select(pl.col("task").unique(maintain_order=True)).collect()["task"].to_list()
    rank = pl.col("task").replace_strict(order, list(range(len(order))), default=len(order))
    return out.drop("_n_metrics").sort([rank, pl.col("arm"), pl.col("replicate"), pl.col("fold")])


def trial_scores(folds: pl.DataFrame) -> pl.DataFrame:
    """Mean over eval folds: one row per (arm, replicate, task) with ``value`` and ``n_folds``."""
    return (
        folds.group_by(["arm", "replicate", "task"])
        .agg(pl.col("value").mean(), pl.len().alias("n_folds"), pl.col("trial_id").first())
        .sort(["arm", "task", "replicate"])
    )


def normalise(
    scores: pl.DataFrame,
    floor: pl.DataFrame | float | None,
    ceiling: pl.DataFrame | float | None = 1.0,
) -> pl.DataFrame:
    """Rescale ``value`` per task to ``(value - floor) / (ceiling - floor)`` (0 = floor, 1 = ceiling).

    ``floor``/``ceiling`` are numbers or frames with columns ``task, value`` (e.g. the random-init
    backbone's per-task score from :func:`reference_scores`); heterogeneous metrics (balanced accuracy,
    Dice, Pearson r) then share one scale before averaging.
    """

    def as_frame(ref: pl.DataFrame | float | None, name: str, default: float) -> pl.DataFrame:
        if ref is None:
            ref = default
        if isinstance(ref, (int, float)):
            return scores.select("task").unique().with_columns(pl.lit(float(ref)).alias(name))
        return ref.select("task", pl.col("value").alias(name))

    lo = as_frame(floor, "_lo", 0.0)
    hi = as_frame(ceiling, "_hi", 1.0)
    out = scores.join(lo, on="task", how="left").join(hi, on="task", how="left")
    missing = out.filter(pl.col("_lo").is_null() | pl.col("_hi").is_null())["task"].unique().to_list()
    if missing:
        raise ResultsError(f"normalisation: no floor/ceiling for task(s) {sorted(missing)}")
    bad = out.filter(pl.col("_hi") <= pl.col("_lo"))["task"].unique().to_list()
    if bad:
        raise ResultsError(f"normalisation: ceiling <= floor for task(s) {sorted(bad)}")
    return out.with_columns(((pl.col("value") - pl.col("_lo")) / (pl.col("_hi") - pl.col("_lo"))).alias("value")).drop(
        "_lo", "_hi"
    )


def trial_values(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    sel: Selection | None = None,
) -> pl.DataFrame:
    """One row per trial: the mean over tasks (and folds) of the selected metric, with the trial's arm,
    replicate, params and cost columns (``tiles_seen``, ``gpu_hours``, ``wall_time_s``: their maximum).
    The input of data-efficiency curves and parameter importance."""
    sel = sel or Selection()
    lf, _ = as_lazy(source)
    lf = fill_defaults(lf)
    names = lf.collect_schema().names()
    params = param_columns(names)
    costs = [c for c in ("tiles_seen", "gpu_hours", "wall_time_s") if c in names]
    folds = fold_scores(lf, sel)
    per_trial = (
        folds.group_by(["trial_id", "task"])
        .agg(pl.col("value").mean(), pl.col("arm").first(), pl.col(ARM_NAME).first(), pl.col("replicate").first())
        .group_by("trial_id")
        .agg(pl.col("value").mean(), pl.col("arm").first(), pl.col(ARM_NAME).first(), pl.col("replicate").first(),
             pl.len().alias("n_tasks"))
    )
    side = lf.group_by("trial_id").agg([pl.col(c).drop_nulls().first() for c in params] + [pl.col(c).max() for c in costs]).collect()
    return per_trial.join(side, on="trial_id", how="left").sort("trial_id")


def train_metric(
    source: pl.LazyFrame | pl.DataFrame | str | Path | Sequence[str | Path],
    metric: str = "acceptance_rate",
) -> pl.DataFrame:
    """Final value of a training metric per trial (e.g. the measured tissue ``acceptance_rate``):
    ``trial_id, <metric>``."""
    lf, _ = as_lazy(source)
    lf = fill_defaults(lf).filter((pl.col("kind") == "train") & (pl.col("metric") == metric))
    out = pick_step(lf.with_columns(pl.lit("train").alias("task")), "final").group_by("trial_id").agg(
        pl.col("value").mean().alias(metric)
    ).collect()
    if out.is_empty():
        raise ResultsError(f"no train rows with metric '{metric}'; the trials must log it in metrics.jsonl")
    return out
