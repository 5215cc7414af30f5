"""Ablation tables: rows = arms, columns = tasks + Average + IQM, each cell the mean over seeds with a 95 %
bootstrap CI; the paired difference to the baseline arm with its CI and P(improvement); the best of each
column in bold and those not significantly different from it (paired CI of the difference contains 0)
underlined. Renders Markdown (terminal/GitHub), LaTeX (booktabs) and CSV (long, one row per cell).
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import ResultsError
from pathfm.analysis.stats import ci_from_summary, paired_difference, per_seed_columns, summarise
from pathfm.io import atomic_write_text

NA = "n/a"


def _tex_minus(cell: str) -> str:
    """A typographic minus for negative numbers in LaTeX cells (``-0.017`` -> ``$-$0.017``)."""
    return re.sub(r"(?<![\w.$])-(?=\d)", r"$-$", cell)


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
class AblationTable:
    """All numbers of an ablation table; render with :meth:`to_markdown`, :meth:`to_latex`, :meth:`to_csv`."""

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

    # ---------------------------------------------------------------- helpers
    @property
    def has_ci(self) -> bool:
        return bool(np.isfinite(self.lo).any())

    def _fmt(self, v: float) -> str:
        return NA if v is None or not math.isfinite(v) else f"{v:.{self.digits}f}"

    def _fmt_signed(self, v: float) -> str:
        return NA if v is None or not math.isfinite(v) else f"{v:+.{self.digits}f}"

    def _ci(self, lo: float, hi: float, signed: bool = False) -> str:
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"[{NA}]"
        f = self._fmt_signed if signed else self._fmt
        return f"[{f(lo)}, {f(hi)}]"

    def _arm_label(self, arm: str) -> str:
        return arm + (" (baseline)" if arm == self.baseline and "baseline" not in arm.lower() else "")

    def seeds_label(self, a: int) -> str:
        n = self.n_seeds[a, : len(self.columns) - 2] if len(self.columns) > 2 else self.n_seeds[a]
        lo, hi = int(n.min()), int(n.max())
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def rank(self) -> list[str]:
        """Arms by Average, best first."""
        avg = self.mean[:, self.columns.index("Average")]
        return [self.arms[i] for i in np.argsort(-np.nan_to_num(avg, nan=-np.inf), kind="stable")]

    def _cells(self, a: int, c: int) -> tuple[str, str]:
        val = self._fmt(self.mean[a, c])
        ci = self._ci(self.lo[a, c], self.hi[a, c]) if self.has_ci else ""
        return val, ci

    def _marked_cells(self, a: int, c: int, best: str, tied: str) -> tuple[str, str]:
        """:meth:`_cells` with the value put in the ``best`` template (best in column) or the ``tied``
        template (not significantly different from the best)."""
        val, ci = self._cells(a, c)
        if self.best[a, c]:
            val = best.format(val)
        elif self.tied_with_best[a, c]:
            val = tied.format(val)
        return val, ci

    def _delta_cells(self, a: int) -> tuple[str, str]:
        if self.delta is None:
            return "", ""
        c = self.columns.index("Average")
        if self.arms[a] == self.baseline:
            return "baseline", ""
        d = self._fmt_signed(self.delta[a, c]) + " " + self._ci(self.delta_lo[a, c], self.delta_hi[a, c], signed=True)
        p = self.p_improve[a, c]
        return d, (NA if not math.isfinite(p) else f"{p:.2f}")

    def _caption(self) -> str:
        parts = [
            f"Metric: {self.metric}; cells: mean over seeds"
            + (f" [{int(self.level * 100)}% bootstrap CI, stratified over seeds and folds]" if self.has_ci else "")
            + ". Average: mean over tasks; IQM: interquartile mean over (seed, task) scores.",
            "Bold: best in column; underlined: not significantly different from the best (paired bootstrap CI of the difference contains 0).",
        ]
        if self.baseline is not None:
            parts.append(
                f"Δ: Average minus baseline '{self.baseline}', paired by seed, with its CI; P(Δ>0): bootstrap probability of improvement."
            )
        return " ".join(parts)

    # ---------------------------------------------------------------- renderers
    def to_markdown(self) -> str:
        head = ["Arm", "Seeds"] + self.columns
        if self.delta is not None:
            head += ["Δ Average", "P(Δ>0)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for a, arm in enumerate(self.arms):
            cells = [self._arm_label(arm), self.seeds_label(a)]
            for c in range(len(self.columns)):
                val, ci = self._marked_cells(a, c, "**{}**", "<ins>{}</ins>")
                cells.append(f"{val} {ci}".strip())
            if self.delta is not None:
                cells += list(self._delta_cells(a))
            lines.append("| " + " | ".join(cells) + " |")
        out = "\n".join(lines) + "\n\n" + self._caption() + "\n"
        if self.comparisons:
            out += "\n" + self.comparisons_markdown()
        for n in self.notes:
            out += f"\nNote: {n}"
        return out + ("\n" if self.notes else "")

    def to_latex(self) -> str:
        def esc(s: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"), ("Δ", r"$\Delta$")):
                s = s.replace(a, b)
            return s

        ncols = len(self.columns) + 2 + (2 if self.delta is not None else 0)
        head = ["Arm", "$n$"] + [esc(c) for c in self.columns]
        if self.delta is not None:
            head += [r"$\Delta$ Average", r"$P(\Delta>0)$"]
        out = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
               r"\begin{tabular}{l" + "r" * (ncols - 1) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
        for a, arm in enumerate(self.arms):
            cells = [esc(self._arm_label(arm)), self.seeds_label(a)]
            for c in range(len(self.columns)):
                val, ci = self._marked_cells(a, c, r"\textbf{{{}}}", r"\underline{{{}}}")
                cells.append(val + (rf"\,{{\scriptsize {ci}}}" if ci else ""))
            if self.delta is not None:
                d, p = self._delta_cells(a)
                cells += [d, p]
            out.append(" & ".join(cells[:2] + [_tex_minus(c) for c in cells[2:]]) + r" \\")
        if self.comparisons:
            out.append(r"\midrule")
            out.append(r"\multicolumn{" + str(ncols) + r"}{l}{\emph{Planned comparisons ($\Delta$, paired by seed)}} \\")
            for cmp in self.comparisons:
                cells = self._comparison_cells(cmp)
                row = [esc(f"{cmp['arm']} vs {cmp['reference']}"), str(int(cmp["n_pairs"][len(self.columns) - 2]))]
                if self.delta is not None:  # Δ per task under the tasks, Δ Average under Average, P under P(Δ>0)
                    row += cells[:-1] + ["", "", cells[-1]]
                else:
                    row += cells[:-2] + [f"{cells[-2]} (P={cells[-1]})", ""]
                out.append(" & ".join(row[:2] + [_tex_minus(c) for c in row[2:]]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(self._caption())}}}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        head = ["Arm", "Seeds"] + self.columns + (["Δ Average", "P(Δ>0)"] if self.delta is not None else [])
        rows = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        for a, arm in enumerate(self.arms):
            cells = [html.escape(self._arm_label(arm)), self.seeds_label(a)]
            for c in range(len(self.columns)):
                val, ci = self._marked_cells(a, c, "<b>{}</b>", "<u>{}</u>")
                cells.append(f"{val} <small>{ci}</small>" if ci else val)
            if self.delta is not None:
                cells += [html.escape(x) for x in self._delta_cells(a)]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        rows += ["</tbody>", "</table>", f"<p><small>{html.escape(self._caption())}</small></p>"]
        if self.comparisons:
            from pathfm.analysis.report import _md_table_to_html

            rows.append(_md_table_to_html(self.comparisons_markdown()))
        rows += [f"<p><small>Note: {html.escape(n)}</small></p>" for n in self.notes]
        return "\n".join(rows) + "\n"

    def _comparison_cells(self, cmp: dict) -> list[str]:
        cells = []
        for c in range(len(self.columns) - 1):  # tasks and Average (IQM is not a per-seed quantity)
            cells.append(self._fmt_signed(cmp["delta"][c]) + " " + self._ci(cmp["lo"][c], cmp["hi"][c], signed=True))
        p = cmp["p_improve"][len(self.columns) - 2]
        return cells + [NA if not math.isfinite(p) else f"{p:.2f}"]

    def comparisons_markdown(self) -> str:
        """The study's planned comparisons (arm vs its reference), paired by seed."""
        head = ["Comparison", "Pairs"] + [f"Δ {c}" for c in self.columns[:-1]] + ["P(Δ>0)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for cmp in self.comparisons:
            n = int(cmp["n_pairs"][len(self.columns) - 2])
            lines.append("| " + " | ".join([f"{cmp['arm']} vs {cmp['reference']}", str(n)] + self._comparison_cells(cmp)) + " |")
        return ("\n".join(lines) + "\n\nPlanned comparisons: difference arm minus reference per column, paired by seed, "
                f"{int(self.level * 100)}% paired-bootstrap CI; P(Δ>0) for the Average.\n")

    def to_frame(self) -> pl.DataFrame:
        """Long form: one row per (arm, column) with every number of the table."""
        recs = []
        for a, arm in enumerate(self.arms):
            for c, col in enumerate(self.columns):
                r = {
                    "arm": arm, "column": col, "metric": self.metric, "mean": self.mean[a, c],
                    "ci_low": self.lo[a, c], "ci_high": self.hi[a, c], "n_seeds": int(self.n_seeds[a, c]),
                    "best": bool(self.best[a, c]), "not_sig_worse_than_best": bool(self.tied_with_best[a, c]),
                    "baseline": self.baseline,
                }
                if self.delta is not None:
                    r.update(delta=self.delta[a, c], delta_ci_low=self.delta_lo[a, c],
                             delta_ci_high=self.delta_hi[a, c], p_improve=self.p_improve[a, c])
                recs.append(r)
        for cmp in self.comparisons:
            for c, col in enumerate(self.columns[:-1]):
                recs.append({"arm": cmp["arm"], "column": col, "metric": self.metric, "baseline": cmp["reference"],
                             "delta": cmp["delta"][c], "delta_ci_low": cmp["lo"][c], "delta_ci_high": cmp["hi"][c],
                             "p_improve": cmp["p_improve"][c], "n_seeds": int(cmp["n_pairs"][c])})
        frame = pl.DataFrame(recs, infer_schema_length=None)
        frame = frame.with_columns(pl.when(pl.col("mean").is_null() & pl.col("delta").is_not_null()).then(pl.lit("comparison"))
                                   .otherwise(pl.lit("cell")).alias("row_type")) if "delta" in frame.columns else \
            frame.with_columns(pl.lit("cell").alias("row_type"))
        return frame.with_columns(pl.selectors.float().fill_nan(None))

    def to_csv(self, path: str | Path | None = None) -> str:
        buf = io.StringIO()
        self.to_frame().write_csv(buf, null_value="n/a")
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def render(self, fmt: Literal["md", "markdown", "latex", "tex", "csv", "html"]) -> str:
        fmt = {"markdown": "md", "tex": "latex"}.get(fmt, fmt)
        return {"md": self.to_markdown, "latex": self.to_latex, "csv": self.to_csv, "html": self.to_html}[fmt]()


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
) -> AblationTable:
    """Ablation table from ``fold_scores`` rows (columns ``arm, replicate, task, fold, value``).

    ``comparisons``: planned (arm, reference) pairs, each reported as a paired difference with its CI.
    ``top``: keep only the best ``top`` arms by Average (plus the baseline), e.g. for random searches."""
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
    s = summarise(x, tasks, n_boot=n_boot, seed=seed)
    lo, hi = ci_from_summary(s, level)
    point = s.point
    sign = 1.0 if higher_is_better else -1.0
    seed_cols = per_seed_columns(x)
    score = np.nan_to_num(sign * point, nan=-np.inf)
    best_idx = np.argmax(score, axis=0)
    best = (score == score[best_idx, np.arange(score.shape[1])][None]) & np.isfinite(point)
    vs_best = paired_difference(s, seed_cols, best_idx, level)
    tied = (~best) & np.isfinite(vs_best.lo) & (vs_best.lo <= 0) & (vs_best.hi >= 0)
    table = AblationTable(
        arms=all_arms, columns=s.columns, mean=point, lo=lo, hi=hi, n_seeds=s.n_seeds, best=best,
        tied_with_best=tied, baseline=baseline, metric=metric or ",".join(sorted(folds["metric"].unique().to_list())),
        level=level, notes=notes, digits=digits, higher_is_better=higher_is_better,
        seeds=_labels_per_arm(folds, "replicate", all_arms), trial_ids=_labels_per_arm(folds, "trial_id", all_arms),
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
    if baseline is not None:
        b = all_arms.index(baseline)
        d = paired_difference(s, seed_cols, b, level, higher_is_better)
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
        d = paired_difference(s, seed_cols, all_arms.index(ref), level, higher_is_better)
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


def _labels_per_arm(folds: pl.DataFrame, col: str, arms: Sequence[str]) -> dict[str, list[str]]:
    """Sorted distinct ``col`` values (seeds, trial ids) of each arm; empty lists when ``col`` is absent."""
    if col not in folds.columns:
        return {a: [] for a in arms}
    g = folds.filter(pl.col("arm").is_in(list(arms))).group_by("arm").agg(pl.col(col).cast(pl.String).unique().sort())
    got = dict(zip(g["arm"].to_list(), g[col].to_list()))
    return {a: [v for v in got.get(a, []) if v is not None] for a in arms}


def _reorder(t: AblationTable, order: list[int]) -> AblationTable:
    idx = np.asarray(order)
    for name in ("mean", "lo", "hi", "n_seeds", "best", "tied_with_best", "delta", "delta_lo", "delta_hi", "p_improve"):
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
    ``sort=None``: the ``table_order`` hint of ``study_plan.json`` when there is one, else by Average.
    """
    from pathfm.analysis.load import Selection, fold_scores, read_analysis_hints, read_sweep_meta, reference_scores
    from pathfm.analysis.load import normalise as rescale

    sel = sel or Selection()
    meta = {} if isinstance(results, (pl.DataFrame, pl.LazyFrame)) else read_sweep_meta(results)
    if baseline is None:
        baseline = meta.get("baseline_arm")
    folds = fold_scores(results, sel)
    present = sorted(folds["arm"].unique().to_list())
    if baseline is not None and baseline not in present:
        variants = [a for a in present if a.split(", ")[0] == baseline]
        if variants:
            varying = sorted({kv.split("=")[0] for a in variants for kv in a.split(", ")[1:]})
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
    if arms is None and isinstance(comparisons, list) and all(isinstance(a, str) for a in comparisons):
        wanted = set(comparisons) | ({baseline} if baseline else set())
        arms = [a for a in present if a in wanted or a.split(", ")[0] in wanted] or None
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
    if normalise is not None:
        def ref(v):
            try:
                return float(v)
            except (TypeError, ValueError):
                return reference_scores(results, sel, backbone=str(v))

        folds = rescale(folds, ref(normalise), ref(ceiling))
    metric = ",".join(sel.metrics) + (f" (normalised: {normalise} = 0, {ceiling} = 1)" if normalise is not None else "")
    return build_table(folds, baseline=baseline, arms=arms, n_boot=n_boot, level=level, seed=seed, sort=sort,
                       higher_is_better=not lower_is_better, metric=metric, digits=digits,
                       comparisons=[(a, r) for a, r in pairs if arms is None or (a in arms and r in arms)], top=top)
