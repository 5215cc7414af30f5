"""Ablation tables: rows = arms, columns = tasks + Average + IQM, each cell the mean over seeds with a 95 %
bootstrap CI; the paired difference to the baseline arm with its CI and P(improvement); the best of each
column in bold and those not significantly different from it (paired CI of the difference contains 0)
underlined. The renderers (Markdown, LaTeX, HTML, CSV) are in :mod:`pathfm.analysis.table_render`.

Reference rows: the honesty baselines (``random_init``: the same architecture untrained; ``color_histogram``)
evaluated on the same tasks and folds (a sweep evaluates them once: ``trial_id = "reference"``) are shown
below the arms, never ranked, and every arm is checked against the untrained network first: the paired
difference arm - random_init per seed and fold with its bootstrap CI (the random init is one fixed network,
so each seed of an arm is paired with it on the same folds); an arm whose CI contains 0 or lies below is
flagged "not distinguishable from an untrained network".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import ARM_KNOBS, ARM_NAME, ResultsError
from pathfm.analysis.stats import (
    Difference,
    ci_from_summary,
    ci_verdict,
    paired_difference,
    per_seed_columns,
    summarise,
)
from pathfm.analysis.probe_seeds import probe_seeds_per_task
from pathfm.analysis.table_render import NA, TableRendering

REF_PREFIX = "\x00reference:"  # internal arm name of a reference backbone inside the score tensor



def variance_label(seeds_per_arm: Sequence[int], folds_per_task: Sequence[int],
                   probe_seeds_per_task: Sequence[int] = ()) -> str:
    """Which variance the table's intervals reflect, from the pretraining seeds behind each arm and the evaluation
    folds of each task (pure): seeds and folds are resampled together (bootstrap stratified over both). Probe-seed
    repeats are averaged per fold before the bootstrap (:mod:`pathfm.analysis.probe_seeds`); the label says so."""
    averaged = (f"; each fold averages {count_range(probe_seeds_per_task)} probe seeds"
                if probe_seeds_per_task and max(probe_seeds_per_task) >= 2 else "")
    return _variance_label(seeds_per_arm, folds_per_task) + averaged


def count_range(v: Sequence[int]) -> str:
    """``3`` or ``2-3``: the range of a count over arms or tasks."""
    lo, hi = min(v), max(v)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _variance_label(seeds_per_arm: Sequence[int], folds_per_task: Sequence[int]) -> str:
    count = count_range
    if not seeds_per_arm or max(seeds_per_arm) < 2:
        return "no interval: one pretraining seed per arm (run more seeds)"
    label = f"intervals reflect pretraining seeds ({count(seeds_per_arm)} per arm)"
    if folds_per_task and max(folds_per_task) >= 2:
        return label + f" and evaluation folds ({count(folds_per_task)} per task), resampled together"
    return label + " only (one evaluation fold per task)"


def score_tensor(folds: pl.DataFrame) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """``fold_scores`` rows -> ``x[arm, replicate, task, fold]`` (NaN where absent), with the labels."""
    # several trials of one arm and seed (re-runs) pool into one replicate
    tasks = folds["task"].unique(maintain_order=True).to_list()  # first-appearance order
    folds = folds.group_by(["arm", "replicate", "task", "fold"]).agg(pl.col("value").mean())
    arms = sorted(folds["arm"].unique().to_list())
    reps = sorted(folds["replicate"].unique().to_list())
    # fold slots are numbered within each (arm, replicate, task) so any fold labels work
    f = folds.with_columns(pl.col("fold").rank("dense").over(["arm", "replicate", "task"]).cast(pl.Int64).alias("_f") - 1)
    n_f = int(f["_f"].max()) + 1
    x = np.full((len(arms), len(reps), len(tasks), n_f), np.nan)
    ai = f["arm"].replace_strict(arms, list(range(len(arms)))).to_numpy()
    ri = f["replicate"].replace_strict(reps, list(range(len(reps)))).to_numpy()
    ti = f["task"].replace_strict(tasks, list(range(len(tasks)))).to_numpy()
    x[ai, ri, ti, f["_f"].to_numpy()] = f["value"].to_numpy()
    return x, arms, reps, tasks


@dataclass
class AblationTable(TableRendering):
    """All numbers of an ablation table; render with :meth:`to_markdown`, :meth:`to_latex`, :meth:`to_html`,
    :meth:`to_csv` (:mod:`pathfm.analysis.table_render`)."""

    arms: list[str]
    columns: list[str]  # tasks, then "Average", "IQM"
    mean: np.ndarray  # (A, C)
    lo: np.ndarray
    hi: np.ndarray
    n_seeds: np.ndarray
    best: np.ndarray  # bool (A, C)
    tied_with_best: np.ndarray  # bool (A, C): not significantly different from the best
    baseline: str | None = None
    delta: np.ndarray | None = None
    delta_lo: np.ndarray | None = None
    delta_hi: np.ndarray | None = None
    p_improve: np.ndarray | None = None
    metric: str = "balanced_accuracy"
    level: float = 0.95
    notes: list[str] = field(default_factory=list)
    digits: int = 3
    comparisons: list[dict] = field(default_factory=list)  # {arm, reference, delta, lo, hi, p_improve, n_pairs}
    higher_is_better: bool = True
    seeds: dict[str, list[str]] = field(default_factory=dict)  # arm -> replicate labels (seeds) behind its cells
    trial_ids: dict[str, list[str]] = field(default_factory=dict)  # arm -> trial ids behind its cells
    # reference rows (honesty baselines, shown under the arms, never ranked): names and (R, C) numbers
    references: list[str] = field(default_factory=list)
    ref_mean: np.ndarray | None = None
    ref_lo: np.ndarray | None = None
    ref_hi: np.ndarray | None = None
    # arm - random_init, paired by seed and fold (A, C); None without random-init reference rows
    untrained_delta: np.ndarray | None = None
    untrained_lo: np.ndarray | None = None
    untrained_hi: np.ndarray | None = None
    untrained_pairs: np.ndarray | None = None
    reference_note: str | None = None  # why there is no untrained-network check, when there is none
    folds_per_task: dict[str, int] = field(default_factory=dict)  # evaluation folds behind each task's cells
    probe_seeds_per_task: dict[str, int] = field(default_factory=dict)  # probe seeds averaged in each fold

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

    def untrained_verdicts(self, column: str = "Average") -> dict[str, str]:
        """Per arm: ``beats`` (paired CI of arm - random_init excludes 0 on the better side),
        ``indistinguishable`` (CI contains 0), ``worse`` (CI excludes 0 on the worse side) or ``n/a`` (no CI:
        fewer than two seeds); ``{}`` without random-init reference rows."""
        if self.untrained_delta is None:
            return {}
        c = self.columns.index(column)
        words = {"better": "beats", "worse": "worse", "unsure": "indistinguishable", "n/a": NA}
        return {
            arm: words[ci_verdict(self.untrained_delta[a, c], self.untrained_lo[a, c], self.untrained_hi[a, c],
                                  self.higher_is_better)]
            for a, arm in enumerate(self.arms)
        }


def build_table(
    folds: pl.DataFrame,
    baseline: str | None = None,
    arms: Sequence[str] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    sort: Literal["average", "name", "none"] = "average",
    higher_is_better: bool = True,
    metric: str | None = None,
    digits: int = 3,
    comparisons: Sequence[tuple[str, str]] = (),
    top: int | None = None,
    references: pl.DataFrame | None = None,
) -> AblationTable:
    """Ablation table from ``fold_scores`` rows (columns ``arm, replicate, task, fold, value``).

    ``comparisons``: planned (arm, reference) pairs, each reported as a paired difference with its CI.
    ``top``: keep only the best ``top`` arms by Average (plus the baseline), e.g. for random searches.
    ``references``: the honesty baselines per fold (``reference, task, fold, value``, from
    :func:`pathfm.analysis.load.reference_fold_scores`): shown as reference rows, and every arm is tested
    against ``random_init`` (paired by seed and fold: the untrained network's score on a fold is paired with
    each seed's score on that fold)."""
    if folds.is_empty():
        raise ResultsError("no scores to tabulate (the selection matched nothing)")
    ref_names: list[str] = []
    if references is not None and not references.is_empty():
        present_tasks = folds["task"].unique().to_list()
        ref = references.filter(pl.col("task").is_in(present_tasks))
        ref_names = [r for r in ("random_init", "color_histogram") if r in ref["reference"].unique().to_list()]
        ref_names += sorted(set(ref["reference"].unique().to_list()) - set(ref_names))
        # one fixed network: its fold scores stand beside every replicate (seed) of the arms
        reps = folds.select(pl.col("replicate").unique())
        ref_rows = (ref.join(reps, how="cross")
                    .select((pl.lit(REF_PREFIX) + pl.col("reference")).alias("arm"), "replicate", "task",
                            pl.col("fold").cast(pl.Int64), pl.col("value").cast(pl.Float64)))
        cols = ["arm", "replicate", "task", "fold", "value"]
        folds_all = pl.concat([folds.select(cols).with_columns(pl.col("fold").cast(pl.Int64),
                                                              pl.col("value").cast(pl.Float64)), ref_rows])
    else:
        folds_all = folds
    x_all, names_all, _reps, tasks = score_tensor(folds_all)
    arm_pos = [i for i, n in enumerate(names_all) if not n.startswith(REF_PREFIX)]
    x, all_arms = x_all[arm_pos], [names_all[i] for i in arm_pos]
    x_ref = x_all[[names_all.index(REF_PREFIX + r) for r in ref_names]]
    notes: list[str] = []
    if arms:
        unknown = [a for a in arms if a not in all_arms]
        if unknown:
            raise ResultsError(f"arm(s) {unknown} not in the results (arms present: {all_arms})")
        keep = [all_arms.index(a) for a in arms]
        x, all_arms = x[keep], list(arms)
    n_arms = len(all_arms)
    x_full = np.concatenate([x, x_ref], axis=0)  # arms first: the references only join the shared draws
    if baseline is not None and baseline not in all_arms:
        raise ResultsError(
            f"baseline arm '{baseline}' is not in the results (arms present: {all_arms}); "
            "pass --baseline with one of these, or fix baseline_arm in sweep_meta.json"
        )
    s = summarise(x_full, tasks, n_boot=n_boot, seed=seed)  # the draws of the arms do not depend on the references
    lo_full, hi_full = ci_from_summary(s, level)
    lo, hi = lo_full[:n_arms], hi_full[:n_arms]
    point = s.point[:n_arms]
    sign = 1.0 if higher_is_better else -1.0
    seed_cols = per_seed_columns(x_full)
    score = np.nan_to_num(sign * point, nan=-np.inf)
    best_idx = np.argmax(score, axis=0)
    best = (score == score[best_idx, np.arange(score.shape[1])][None]) & np.isfinite(point)
    vs_best = _arms_only(paired_difference(s, seed_cols, best_idx, level), n_arms)
    tied = (~best) & np.isfinite(vs_best.lo) & (vs_best.lo <= 0) & (vs_best.hi >= 0)
    table = AblationTable(
        arms=all_arms, columns=s.columns, mean=point, lo=lo, hi=hi, n_seeds=s.n_seeds[:n_arms], best=best,
        tied_with_best=tied, baseline=baseline, metric=metric or ",".join(sorted(folds["metric"].unique().to_list())),
        level=level, notes=notes, digits=digits, higher_is_better=higher_is_better,
        seeds=_labels_per_arm(folds, "replicate", all_arms), trial_ids=_labels_per_arm(folds, "trial_id", all_arms),
        folds_per_task=dict(folds.group_by("task").agg(pl.col("fold").n_unique()).iter_rows()),
        probe_seeds_per_task=probe_seeds_per_task(folds),
    )
    single = [a for i, a in enumerate(all_arms) if s.n_seeds[i].max() < 2]
    if single:
        notes.append(
            f"CI n/a for {len(single)} arm(s) with a single seed ({'; '.join(single[:5])}{'; ...' if len(single) > 5 else ''}); "
            "run more seeds for confidence intervals and significance marks."
        )
    incomplete = [a for i, a in enumerate(all_arms) if np.isnan(point[i, -2])]
    if incomplete:
        notes.append(f"Average n/a for arm(s) {incomplete}: no seed has every task {tasks}.")
    if ref_names:
        table.references = ref_names
        table.ref_mean, table.ref_lo, table.ref_hi = s.point[n_arms:], lo_full[n_arms:], hi_full[n_arms:]
        if "random_init" in ref_names:
            u = _arms_only(paired_difference(s, seed_cols, n_arms + ref_names.index("random_init"), level,
                                             higher_is_better), n_arms)
            table.untrained_delta, table.untrained_lo, table.untrained_hi, table.untrained_pairs = u.delta, u.lo, u.hi, u.n_pairs
    if baseline is not None:
        b = all_arms.index(baseline)
        d = _arms_only(paired_difference(s, seed_cols, b, level, higher_is_better), n_arms)
        for arr in (d.delta, d.lo, d.hi, d.p_improve):
            arr[b] = np.nan  # the baseline is not compared with itself
        table.delta, table.delta_lo, table.delta_hi, table.p_improve = d.delta, d.lo, d.hi, d.p_improve
        unpaired = [a for i, a in enumerate(all_arms) if i != b and d.n_pairs[i, -2] == 0]
        if unpaired:
            notes.append(f"Δ n/a for arm(s) {unpaired}: no seed shared with the baseline '{baseline}'.")
    for arm, ref in comparisons:
        missing = [a for a in (arm, ref) if a not in all_arms]
        if missing:
            raise ResultsError(f"comparison {arm} vs {ref}: arm(s) {missing} not in the results (arms present: {all_arms})")
        d = _arms_only(paired_difference(s, seed_cols, all_arms.index(ref), level, higher_is_better), n_arms)
        i = all_arms.index(arm)
        table.comparisons.append({"arm": arm, "reference": ref, "delta": d.delta[i], "lo": d.lo[i], "hi": d.hi[i],
                                  "p_improve": d.p_improve[i], "n_pairs": d.n_pairs[i]})
    order = list(range(len(all_arms)))
    if sort == "average":
        order = [all_arms.index(a) for a in table.rank()]
    elif sort == "name":
        order = sorted(order, key=lambda i: all_arms[i])
    if baseline is not None and sort != "none":
        b = all_arms.index(baseline)
        order = [b] + [i for i in order if i != b]
    if top is not None and len(order) > top:
        ranked = [all_arms.index(a) for a in table.rank()][:top]
        keep = set(ranked) | ({all_arms.index(baseline)} if baseline is not None else set())
        notes.append(f"Showing the best {top} of {len(order)} arms by Average" + (" (and the baseline)." if baseline else "."))
        order = [i for i in order if i in keep]
    return _reorder(table, order)


def _arms_only(d: Difference, n_arms: int) -> Difference:
    """A :class:`Difference` restricted to the arms (the reference rows follow them in the score tensor)."""
    return Difference(d.delta[:n_arms], d.lo[:n_arms], d.hi[:n_arms], d.p_improve[:n_arms], d.n_pairs[:n_arms])


def _labels_per_arm(folds: pl.DataFrame, col: str, arms: Sequence[str]) -> dict[str, list[str]]:
    """Sorted distinct ``col`` values (seeds, trial ids) of each arm; empty lists when ``col`` is absent."""
    if col not in folds.columns:
        return {a: [] for a in arms}
    g = folds.filter(pl.col("arm").is_in(list(arms))).group_by("arm").agg(pl.col(col).cast(pl.String).unique().sort())
    got = dict(zip(g["arm"].to_list(), g[col].to_list()))
    return {a: [v for v in got.get(a, []) if v is not None] for a in arms}


def _reorder(t: AblationTable, order: list[int]) -> AblationTable:
    idx = np.asarray(order)
    for name in ("mean", "lo", "hi", "n_seeds", "best", "tied_with_best", "delta", "delta_lo", "delta_hi", "p_improve",
                 "untrained_delta", "untrained_lo", "untrained_hi", "untrained_pairs"):
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
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
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
        reference_fold_scores,
        reference_scores,
        scan_results,
        sweep_meta_of,
    )
    from pathfm.analysis.load import normalise as rescale

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
    table = build_table(folds, baseline=baseline, arms=arms, n_boot=n_boot, level=level, seed=seed, sort=sort,
                        higher_is_better=not lower_is_better, metric=metric, digits=digits,
                        comparisons=[(a, r) for a, r in pairs if arms is None or (a in arms and r in arms)], top=top,
                        references=refs)
    table.reference_note = note
    return table
