"""Ablation tables: rows = arms, columns = tasks + Average + IQM, each cell the mean over seeds with a Student-t
interval over the arm's per-seed values (the seed is the unit of replication, :mod:`pathfm.analysis.stats`);
the paired difference to the baseline arm with its interval and p-value, Holm-corrected over the table's
arms; the best of each column in bold and those no other arm significantly beats (paired t-tests of all pairs,
Holm over the pairs) underlined. The renderers (Markdown, LaTeX, HTML, CSV) are in
:mod:`pathfm.analysis.table_render`.

Reference rows: the honesty baselines (``random_init``: the same architecture untrained, evaluated at several
init seeds; ``color_histogram``) evaluated on the same tasks and folds (a sweep evaluates them once:
``trial_id = "reference"``) are shown below the arms, never ranked, and every arm is checked against the
untrained network first: an unpaired t-test (:func:`~pathfm.analysis.stats.welch_t`) of the arm's per-seed
scores against random init's per-init-seed scores, Holm over the arms; an arm that does not beat it is flagged "not distinguishable from an untrained
network". A random init evaluated at one init seed only (an older sweep) is compared as a fixed value, with a
note that its own init variance is not in the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import ARM_KNOBS, ARM_NAME, ResultsError
from pathfm.analysis.power import VarianceComponents, design_sentence, variance_components
from pathfm.analysis.probe_seeds import probe_seeds_per_task
from pathfm.analysis.stats import ALPHA, Test, holm, pairwise_worse, paired_t, seed_columns, t_interval, verdict, welch_t
from pathfm.analysis.table_render import NA, TableRendering


def variance_label(seeds_per_arm: Sequence[int], folds_per_task: Sequence[int],
                   probe_seeds_per_task: Sequence[int] = ()) -> str:
    """Which variance the table's intervals reflect, from the pretraining seeds behind each arm and the evaluation
    folds of each task (pure): the seeds are the replicates; folds (and probe-seed repeats) are averaged within a
    seed before any interval is computed."""
    count = count_range
    if not seeds_per_arm or max(seeds_per_arm) < 2:
        return "no interval: one pretraining seed per arm (run more seeds)"
    label = f"Student-t over pretraining seeds ({count(seeds_per_arm)} per arm)"
    averaged = []
    if folds_per_task and max(folds_per_task) >= 2:
        averaged.append(f"{count(folds_per_task)} evaluation folds per task")
    if probe_seeds_per_task and max(probe_seeds_per_task) >= 2:
        averaged.append(f"{count(probe_seeds_per_task)} probe seeds per fold")
    return label + (f"; {' and '.join(averaged)} averaged within each seed" if averaged else "")


def count_range(v: Sequence[int]) -> str:
    """``3`` or ``2-3``: the range of a count over arms or tasks."""
    lo, hi = min(v), max(v)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def score_tensor(folds: pl.DataFrame, tasks: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """``fold_scores`` rows -> ``x[arm, replicate, task, fold]`` (NaN where absent), with the labels; ``tasks``
    fixes the task axis (default: first-appearance order)."""
    # several trials of one arm and seed (re-runs) pool into one replicate
    tasks = list(tasks) if tasks is not None else folds["task"].unique(maintain_order=True).to_list()
    folds = folds.filter(pl.col("task").is_in(tasks)).group_by(["arm", "replicate", "task", "fold"]).agg(
        pl.col("value").mean())
    arms = sorted(folds["arm"].unique().to_list())
    reps = sorted(folds["replicate"].unique().to_list())
    # fold slots are numbered within each (arm, replicate, task) so any fold labels work
    f = folds.with_columns(pl.col("fold").rank("dense").over(["arm", "replicate", "task"]).cast(pl.Int64).alias("_f") - 1)
    n_f = int(f["_f"].max()) + 1 if f.height else 1
    x = np.full((len(arms), len(reps), len(tasks), n_f), np.nan)
    ai = f["arm"].replace_strict(arms, list(range(len(arms)))).to_numpy()
    ri = f["replicate"].replace_strict(reps, list(range(len(reps)))).to_numpy()
    ti = f["task"].replace_strict(tasks, list(range(len(tasks)))).to_numpy()
    x[ai, ri, ti, f["_f"].to_numpy()] = f["value"].to_numpy()
    return x, arms, reps, tasks


@dataclass
class AblationTable(TableRendering):
    """All numbers of an ablation table; render with :meth:`to_markdown`, :meth:`to_latex`, :meth:`to_html`,
    :meth:`to_csv` (:mod:`pathfm.analysis.table_render`). Verdicts use the Holm-adjusted p-values
    (``*_p_adj``) at :data:`alpha`; the unadjusted ones (``*_p``) are shown beside them."""

    arms: list[str]
    columns: list[str]  # tasks, then "Average", "IQM"
    mean: np.ndarray  # (A, C)
    lo: np.ndarray
    hi: np.ndarray
    n_seeds: np.ndarray
    best: np.ndarray  # bool (A, C)
    tied_with_best: np.ndarray  # bool (A, C): no other arm significantly better (all pairs, Holm)
    baseline: str | None = None
    delta: np.ndarray | None = None
    delta_lo: np.ndarray | None = None
    delta_hi: np.ndarray | None = None
    delta_p: np.ndarray | None = None  # paired t-test p, unadjusted
    delta_p_adj: np.ndarray | None = None  # Holm over the arms compared with the baseline, per column
    metric: str = "balanced_accuracy"
    level: float = 0.95
    notes: list[str] = field(default_factory=list)
    digits: int = 3
    comparisons: list[dict] = field(default_factory=list)  # {arm, reference, delta, lo, hi, p, p_adj, n_pairs}
    higher_is_better: bool = True
    seeds: dict[str, list[str]] = field(default_factory=dict)  # arm -> replicate labels (seeds) behind its cells
    trial_ids: dict[str, list[str]] = field(default_factory=dict)  # arm -> trial ids behind its cells
    # reference rows (honesty baselines, shown under the arms, never ranked): names and (R, C) numbers
    references: list[str] = field(default_factory=list)
    ref_mean: np.ndarray | None = None
    ref_lo: np.ndarray | None = None
    ref_hi: np.ndarray | None = None
    ref_seeds: list[int] = field(default_factory=list)  # init seeds behind each reference row
    # arm - random_init (Welch over seeds), (A, C); None without random-init reference rows
    untrained_delta: np.ndarray | None = None
    untrained_lo: np.ndarray | None = None
    untrained_hi: np.ndarray | None = None
    untrained_pairs: np.ndarray | None = None  # the arm's seeds in the test
    untrained_p: np.ndarray | None = None
    untrained_p_adj: np.ndarray | None = None
    reference_note: str | None = None  # why there is no untrained-network check, when there is none
    folds_per_task: dict[str, int] = field(default_factory=dict)  # evaluation folds behind each task's cells
    probe_seeds_per_task: dict[str, int] = field(default_factory=dict)  # probe seeds averaged in each fold
    alpha: float = ALPHA
    design: str = ""  # what the design can detect (pathfm.analysis.power.design_sentence)
    variance: VarianceComponents | None = None

    # ---------------------------------------------------------------- statistics
    @property
    def has_ci(self) -> bool:
        return bool(np.isfinite(self.lo).any())

    def seeds_label(self, a: int) -> str:
        n = self.n_seeds[a, : len(self.columns) - 2] if len(self.columns) > 2 else self.n_seeds[a]
        lo, hi = int(n.min()), int(n.max())
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def variance_note(self) -> str:
        """Which variance the intervals reflect (:func:`variance_label`)."""
        tasks = self.n_seeds[:, : len(self.columns) - 2] if len(self.columns) > 2 else self.n_seeds
        return variance_label([int(n) for n in tasks.min(axis=1)], list(self.folds_per_task.values()),
                              list(self.probe_seeds_per_task.values()))

    def rank(self) -> list[str]:
        """Arms by Average, best first."""
        avg = self.mean[:, self.columns.index("Average")]
        return [self.arms[i] for i in np.argsort(-np.nan_to_num(avg, nan=-np.inf), kind="stable")]

    def delta_verdicts(self, column: str = "Average") -> dict[str, str]:
        """Per arm: ``better`` / ``worse`` than the baseline (Holm-adjusted p < alpha), ``unsure`` or ``n/a``;
        ``{}`` without a baseline. The baseline itself is ``n/a``."""
        if self.delta is None:
            return {}
        c = self.columns.index(column)
        return {arm: verdict(self.delta[a, c], self.delta_p_adj[a, c], self.higher_is_better, self.alpha)
                for a, arm in enumerate(self.arms)}

    def untrained_verdicts(self, column: str = "Average") -> dict[str, str]:
        """Per arm: ``beats`` random init (Holm-adjusted p < alpha, better side), ``indistinguishable``,
        ``worse`` or ``n/a`` (fewer than two seeds); ``{}`` without random-init reference rows."""
        if self.untrained_delta is None:
            return {}
        c = self.columns.index(column)
        words = {"better": "beats", "worse": "worse", "unsure": "indistinguishable", "n/a": NA}
        return {arm: words[verdict(self.untrained_delta[a, c], self.untrained_p_adj[a, c], self.higher_is_better,
                                   self.alpha)]
                for a, arm in enumerate(self.arms)}


def _holm_over_arms(t: Test, exclude: int | None = None) -> np.ndarray:
    """Holm-adjusted p of ``t`` (A, C) over the arms of each column (``exclude``: an arm outside the family)."""
    p = np.array(t.p, dtype=float)
    if exclude is not None:
        p[exclude] = np.nan
    return holm(p, axis=0)


def build_table(
    folds: pl.DataFrame,
    baseline: str | None = None,
    arms: Sequence[str] | None = None,
    level: float = 0.95,
    sort: Literal["average", "name", "none"] = "average",
    higher_is_better: bool = True,
    metric: str | None = None,
    digits: int = 3,
    comparisons: Sequence[tuple[str, str]] = (),
    top: int | None = None,
    references: pl.DataFrame | None = None,
    alpha: float = ALPHA,
) -> AblationTable:
    """Ablation table from ``fold_scores`` rows (columns ``arm, replicate, task, fold, value``).

    ``comparisons``: planned (arm, reference) pairs, each a paired t-test, Holm over the planned pairs.
    ``top``: keep only the best ``top`` arms by Average (plus the baseline), e.g. for random searches (the
    Holm families are then still those of every arm).
    ``references``: the honesty baselines per fold (``reference, replicate, task, fold, value``, from
    :func:`pathfm.analysis.references.reference_fold_scores`; ``replicate``: random init's init seed): shown as
    reference rows, and every arm is tested against ``random_init`` (Welch over seeds)."""
    if folds.is_empty():
        raise ResultsError("no scores to tabulate (the selection matched nothing)")
    x, all_arms, _reps, tasks = score_tensor(folds)
    notes: list[str] = []
    if arms:
        unknown = [a for a in arms if a not in all_arms]
        if unknown:
            raise ResultsError(f"arm(s) {unknown} not in the results (arms present: {all_arms})")
        keep = [all_arms.index(a) for a in arms]
        x, all_arms = x[keep], list(arms)
    if baseline is not None and baseline not in all_arms:
        raise ResultsError(
            f"baseline arm '{baseline}' is not in the results (arms present: {all_arms}); "
            "pass --baseline with one of these, or fix baseline_arm in sweep_meta.json"
        )
    v = seed_columns(x)  # (A, S, C): the per-seed values every statistic below uses
    columns = list(tasks) + ["Average", "IQM"]
    point, lo, hi, n_seeds = t_interval(np.moveaxis(v, 1, -1), level)  # (A, C)
    sign = 1.0 if higher_is_better else -1.0
    score = np.nan_to_num(sign * point, nan=-np.inf)
    best = (score == score.max(axis=0, keepdims=True)) & np.isfinite(point)
    has_ci = np.isfinite(lo)
    tied = (~best) & has_ci & ~pairwise_worse(v, higher_is_better, alpha)
    b = all_arms.index(baseline) if baseline is not None else None
    vc = variance_components(x, b)
    n_family = (len(all_arms) - 1) if b is not None else max(len(all_arms) - 1, 1)
    table = AblationTable(
        arms=all_arms, columns=columns, mean=point, lo=lo, hi=hi, n_seeds=n_seeds, best=best,
        tied_with_best=tied, baseline=baseline, metric=metric or ",".join(sorted(folds["metric"].unique().to_list())),
        level=level, notes=notes, digits=digits, higher_is_better=higher_is_better,
        seeds=_labels_per_arm(folds, "replicate", all_arms), trial_ids=_labels_per_arm(folds, "trial_id", all_arms),
        folds_per_task=dict(folds.group_by("task").agg(pl.col("fold").n_unique()).iter_rows()),
        probe_seeds_per_task=probe_seeds_per_task(folds), alpha=alpha,
        design=design_sentence(vc, n_family, alpha, digits=digits), variance=vc,
    )
    single = [a for i, a in enumerate(all_arms) if n_seeds[i].max() < 2]
    if single:
        notes.append(
            f"CI n/a for {len(single)} arm(s) with a single seed ({'; '.join(single[:5])}{'; ...' if len(single) > 5 else ''}); "
            "run more seeds for confidence intervals and significance marks."
        )
    incomplete = [a for i, a in enumerate(all_arms) if np.isnan(point[i, -2])]
    if incomplete:
        notes.append(f"Average n/a for arm(s) {incomplete}: no seed has every task {tasks}.")
    if references is not None and not references.is_empty():
        _add_references(table, references, v, tasks, level)
    if b is not None:
        d = paired_t(np.moveaxis(v, 1, -1), np.moveaxis(v[b], 0, -1)[None], level)
        p_adj = _holm_over_arms(d, exclude=b)
        for arr in (d.delta, d.lo, d.hi, d.p):
            arr[b] = np.nan  # the baseline is not compared with itself
        table.delta, table.delta_lo, table.delta_hi, table.delta_p, table.delta_p_adj = d.delta, d.lo, d.hi, d.p, p_adj
        unpaired = [a for i, a in enumerate(all_arms) if i != b and d.n[i, -2] == 0]
        if unpaired:
            notes.append(f"Δ n/a for arm(s) {unpaired}: no seed shared with the baseline '{baseline}'.")
    _add_comparisons(table, comparisons, v, level)
    order = list(range(len(all_arms)))
    if sort == "average":
        order = [all_arms.index(a) for a in table.rank()]
    elif sort == "name":
        order = sorted(order, key=lambda i: all_arms[i])
    if b is not None and sort != "none":
        order = [b] + [i for i in order if i != b]
    if top is not None and len(order) > top:
        ranked = [all_arms.index(a) for a in table.rank()][:top]
        keep = set(ranked) | ({b} if b is not None else set())
        notes.append(f"Showing the best {top} of {len(order)} arms by Average" + (" (and the baseline)." if baseline else "."))
        order = [i for i in order if i in keep]
    return _reorder(table, order)


def _add_references(table: AblationTable, references: pl.DataFrame, v: np.ndarray, tasks: list[str],
                    level: float) -> None:
    """Reference rows (mean and t interval over init seeds) and the untrained-network check (Welch, Holm)."""
    ref = references.filter(pl.col("task").is_in(tasks))
    if ref.is_empty():
        return
    if "replicate" not in ref.columns:
        ref = ref.with_columns(pl.lit("0").alias("replicate"))
    present = ref["reference"].unique().to_list()
    names = [r for r in ("random_init", "color_histogram") if r in present] + sorted(set(present) - {"random_init", "color_histogram"})
    xr, ref_names, _, _ = score_tensor(ref.rename({"reference": "arm"}), tasks)
    xr = xr[[ref_names.index(n) for n in names]]
    vr = seed_columns(xr)  # (R, init seeds, C)
    m, lo, hi, n = t_interval(np.moveaxis(vr, 1, -1), level)
    table.references, table.ref_mean, table.ref_lo, table.ref_hi = names, m, lo, hi
    table.ref_seeds = [int(k.max()) for k in n]
    if "random_init" not in names:
        return
    r = names.index("random_init")
    t = welch_t(np.moveaxis(v, 1, -1), np.moveaxis(vr[r], 0, -1)[None], level)
    table.untrained_delta, table.untrained_lo, table.untrained_hi, table.untrained_pairs = t.delta, t.lo, t.hi, t.n
    table.untrained_p, table.untrained_p_adj = t.p, _holm_over_arms(t)
    if table.ref_seeds[r] < 2:
        table.notes.append("random init was evaluated at one init seed only, so the untrained-network check treats "
                           "it as a fixed value and leaves out its own init variance (a sweep evaluates it at "
                           "several: run `pathfm sweep reference DIR` again).")


def _add_comparisons(table: AblationTable, comparisons: Sequence[tuple[str, str]], v: np.ndarray, level: float) -> None:
    """The planned comparisons (paired t-tests), Holm over the planned pairs of each column."""
    tests = []
    for arm, ref in comparisons:
        missing = [a for a in (arm, ref) if a not in table.arms]
        if missing:
            raise ResultsError(f"comparison {arm} vs {ref}: arm(s) {missing} not in the results (arms present: {table.arms})")
        tests.append(paired_t(v[table.arms.index(arm)].T, v[table.arms.index(ref)].T, level))  # (C,)
    if not tests:
        return
    p_adj = holm(np.stack([t.p for t in tests]), axis=0)
    for (arm, ref), t, pa in zip(comparisons, tests, p_adj):
        table.comparisons.append({"arm": arm, "reference": ref, "delta": t.delta, "lo": t.lo, "hi": t.hi,
                                  "p": t.p, "p_adj": pa, "n_pairs": t.n})


def _labels_per_arm(folds: pl.DataFrame, col: str, arms: Sequence[str]) -> dict[str, list[str]]:
    """Sorted distinct ``col`` values (seeds, trial ids) of each arm; empty lists when ``col`` is absent."""
    if col not in folds.columns:
        return {a: [] for a in arms}
    g = folds.filter(pl.col("arm").is_in(list(arms))).group_by("arm").agg(pl.col(col).cast(pl.String).unique().sort())
    got = dict(zip(g["arm"].to_list(), g[col].to_list()))
    return {a: [v for v in got.get(a, []) if v is not None] for a in arms}


def _reorder(t: AblationTable, order: list[int]) -> AblationTable:
    idx = np.asarray(order)
    for name in ("mean", "lo", "hi", "n_seeds", "best", "tied_with_best", "delta", "delta_lo", "delta_hi", "delta_p",
                 "delta_p_adj", "untrained_delta", "untrained_lo", "untrained_hi", "untrained_pairs", "untrained_p",
                 "untrained_p_adj"):
        v = getattr(t, name)
        if v is not None:
            setattr(t, name, v[idx])
    t.arms = [t.arms[i] for i in order]
    return t


def table_from_results(
    results,
    sel=None,
    baseline: str | None = None,
    arms: Sequence[str] | None = None,
    level: float = 0.95,
    sort: Literal["average", "name", "none"] | None = None,
    normalise: str | None = None,
    ceiling: str | float = 1.0,
    digits: int = 3,
    lower_is_better: bool = False,
    compare: Sequence[tuple[str, str]] | None = None,
    top: int | None = None,
) -> AblationTable:
    """Load ``results`` (paths or a frame), select, optionally normalise, and build the table.

    The baseline is ``baseline`` or else ``baseline_arm`` of ``sweep_meta.json`` next to the results;
    ``comparisons`` there: a list of arm names restricts the arms shown when ``arms`` is not given; a list
    of ``[arm, reference]`` pairs adds a planned-comparisons block (``compare`` overrides it).
    ``normalise``: a floor backbone name (e.g. ``random_init``) or a number; ``ceiling`` likewise.
    ``sort=None``: the study's ``table_order`` hint (``sweep_meta.json``) when there is one, else by Average.
    """
    from pathfm.analysis.load import (
        Selection,
        fold_scores,
        read_analysis_hints,
        scan_results,
        sweep_meta_of,
    )
    from pathfm.analysis.load import normalise as rescale
    from pathfm.analysis.references import reference_fold_scores, reference_scores

    sel = sel or Selection()
    meta = {} if isinstance(results, (pl.DataFrame, pl.LazyFrame)) else sweep_meta_of(results)
    if baseline is None:
        baseline = meta.get("baseline_arm")
    folds = fold_scores(results, sel)
    present = sorted(folds["arm"].unique().to_list())
    if baseline is not None and baseline not in present:
        of_baseline = folds.filter(pl.col(ARM_NAME) == baseline)
        variants = of_baseline["arm"].unique().to_list()
        if variants:
            varying = sorted(set(of_baseline[ARM_KNOBS].explode().drop_nulls().to_list()))
            raise ResultsError(
                f"baseline arm '{baseline}' appears with several settings of {varying} ({len(variants)} variants); "
                f"pick one with --where {varying[0]}=VALUE or name a variant with --baseline"
            )
        raise ResultsError(
            f"baseline arm '{baseline}' is not in the results (arms present: {present}); "
            "pass --baseline with one of these, or fix baseline_arm in sweep_meta.json"
        )
    comparisons = meta.get("comparisons")
    pairs = [tuple(c) for c in (comparisons or []) if isinstance(c, (list, tuple)) and len(c) == 2]
    pairs = [(a, r) for a, r in pairs if a in present and r in present]  # pairs of this selection only
    if compare:
        pairs = list(compare)
    if arms is None and isinstance(comparisons, list) and comparisons and all(isinstance(a, str) for a in comparisons):
        wanted = set(comparisons) | ({baseline} if baseline else set())
        in_wanted = set(folds.filter(pl.col(ARM_NAME).is_in(list(wanted)))["arm"].to_list())
        arms = [a for a in present if a in wanted or a in in_wanted] or None
    if arms is not None and baseline is not None and baseline not in arms:
        arms = [baseline] + list(arms)
    if sort is None:  # the study's own row order (e.g. the cumulative component ladder), else by Average
        hinted = [] if isinstance(results, (pl.DataFrame, pl.LazyFrame)) else read_analysis_hints(results).get("table_order") or []
        hinted = [a for a in hinted if a in present and (arms is None or a in arms)]
        if hinted:
            arms = hinted + [a for a in (arms or present) if a not in hinted]
            sort = "none"
        else:
            sort = "average"
    # the honesty baselines on the same tasks and folds (a sweep's reference rows): only beside trained backbones
    # (a tidy table without a backbone column has no baselines to look for)
    frame = results.lazy() if isinstance(results, (pl.DataFrame, pl.LazyFrame)) else scan_results(results)
    with_refs = sel.backbone == "trained" and "backbone" in frame.collect_schema().names()
    refs, ref_notes = reference_fold_scores(results, sel) if with_refs else (None, [])
    note = None
    if with_refs and (refs is None or "random_init" not in refs["reference"].to_list()):
        note = ("; ".join(ref_notes) + ", so whether the arms beat an untrained network is unknown." if
                any("random_init" in n for n in ref_notes) else
                "no random-init reference rows in these results, so whether the arms beat an untrained network is "
                "unknown (sweeps evaluate them once per sweep; for an older sweep run `pathfm sweep reference DIR`).")
    if normalise is not None:
        def ref(v):
            try:
                return float(v)
            except (TypeError, ValueError):
                return reference_scores(results, sel, backbone=str(v))

        floor, top_ref = ref(normalise), ref(ceiling)
        folds = rescale(folds, floor, top_ref)
        if refs is not None:
            refs = rescale(refs, floor, top_ref)
    metric = ",".join(sel.metrics) + (f" (normalised: {normalise} = 0, {ceiling} = 1)" if normalise is not None else "")
    table = build_table(folds, baseline=baseline, arms=arms, level=level, sort=sort,
                        higher_is_better=not lower_is_better, metric=metric, digits=digits,
                        comparisons=[(a, r) for a, r in pairs if arms is None or (a in arms and r in arms)], top=top,
                        references=refs)
    table.reference_note = note
    return table


def power_from_results(results, sel=None, baseline: str | None = None, effect: float | None = None,
                       alpha: float = ALPHA, power: float = 0.8) -> str:
    """The text of ``pathfm analyze power``: the variance components of a pilot's results (its ablation
    table's arms and seeds), the minimum detectable effect at several seed counts and, with ``effect``, the
    seeds that effect needs (:func:`pathfm.analysis.power.power_report`)."""
    from pathfm.analysis.power import power_report

    table = table_from_results(results, sel, baseline=baseline)
    n_comparisons = max(len(table.arms) - 1, 1)
    head = (f"Pilot: {len(table.arms)} arms ({', '.join(table.arms)})"
            + (f", baseline '{table.baseline}'" if table.baseline else ", no baseline") + f"; metric {table.metric}.\n")
    return head + power_report(table.variance, n_comparisons, effect=effect, alpha=alpha, power=power,
                               digits=table.digits)
