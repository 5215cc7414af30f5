"""Ablation tables: rows = arms, columns = tasks + Average + IQM, each cell the mean over seeds with a 95 %
bootstrap CI; the paired difference to the baseline arm with its CI and P(improvement); the best of each
column in bold and those not significantly different from it (paired CI of the difference contains 0)
underlined. Renders Markdown (terminal/GitHub), LaTeX (booktabs) and CSV (long, one row per cell).

Reference rows: the honesty baselines (``random_init``: the same architecture untrained; ``color_histogram``)
evaluated on the same tasks and folds (a sweep evaluates them once: ``trial_id = "reference"``) are shown
below the arms, never ranked, and every arm is checked against the untrained network first: the paired
difference arm - random_init per seed and fold with its bootstrap CI (the random init is one fixed network,
so each seed of an arm is paired with it on the same folds); an arm whose CI contains 0 or lies below is
flagged "not distinguishable from an untrained network".
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

from pathfm.analysis.load import ARM_KNOBS, ARM_NAME, ResultsError
from pathfm.analysis.stats import (
    Difference,
    ci_from_summary,
    ci_verdict,
    paired_difference,
    per_seed_columns,
    summarise,
)
from pathfm.io import atomic_write_text

NA = "n/a"
REF_PREFIX = "\x00reference:"  # internal arm name of a reference backbone inside the score tensor
REFERENCE_LABELS = {"random_init": "random init (untrained)", "color_histogram": "colour histogram"}
_REF_ROW_LABELS = {"random_init": "random init (untrained, reference)", "color_histogram": "colour histogram (reference)"}
UNTRAINED_TEXT = {
    "beats": "beats random init",
    "indistinguishable": "not distinguishable from an untrained network",
    "worse": "worse than an untrained network",
    NA: "not established (fewer than 2 seeds paired with random init)",
}


def variance_label(seeds_per_arm: Sequence[int], folds_per_task: Sequence[int]) -> str:
    """Which variance the table's intervals reflect, from the pretraining seeds behind each arm and the evaluation
    folds of each task (pure): seeds and folds are resampled together (bootstrap stratified over both)."""
    def count(v: Sequence[int]) -> str:
        lo, hi = min(v), max(v)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    if not seeds_per_arm or max(seeds_per_arm) < 2:
        return "no interval: one pretraining seed per arm (run more seeds)"
    label = f"intervals reflect pretraining seeds ({count(seeds_per_arm)} per arm)"
    if folds_per_task and max(folds_per_task) >= 2:
        return label + f" and evaluation folds ({count(folds_per_task)} per task), resampled together"
    return label + " only (one evaluation fold per task)"


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

    def variance_note(self) -> str:
        """Which variance the intervals reflect (:func:`variance_label`)."""
        tasks = self.n_seeds[:, : len(self.columns) - 2] if len(self.columns) > 2 else self.n_seeds
        return variance_label([int(n) for n in tasks.min(axis=1)], list(self.folds_per_task.values()))

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

    def untrained_summary(self, column: str = "Average") -> str:
        """One sentence: how many arms beat random init, and the flagged ones by name."""
        v = self.untrained_verdicts(column)
        if not v:
            return self.reference_note or ""
        beat = [a for a, x in v.items() if x == "beats"]
        same = [a for a, x in v.items() if x == "indistinguishable"]
        worse = [a for a, x in v.items() if x == "worse"]
        unknown = [a for a, x in v.items() if x == NA]
        known = len(v) - len(unknown)
        parts = [f"{len(beat)} of {known} arm(s) with a CI beat random init on the {column}"] if known else \
            [f"not established for any arm (fewer than 2 seeds): run at least 2 seeds to know whether the arms "
             f"beat an untrained network"]
        if same:
            parts.append(f"NOT distinguishable from an untrained network: {', '.join(same)}")
        if worse:
            parts.append(f"WORSE than an untrained network: {', '.join(worse)}")
        if unknown and known:
            parts.append(f"not established (fewer than 2 seeds): {', '.join(unknown)}")
        text = "; ".join(parts) + "."
        if "color_histogram" in self.references:
            c = self.columns.index(column)
            ch = self.ref_mean[self.references.index("color_histogram"), c]
            below = [a for i, a in enumerate(self.arms) if math.isfinite(ch) and self.mean[i, c] < ch]
            if below and len(below) == len(self.arms):
                text += f" Colour histograms alone ({self._fmt(ch)}) score above every arm on the {column}."
            elif below:
                text += f" Colour histograms alone ({self._fmt(ch)}) score above {', '.join(below)} on the {column}."
        return text

    def untrained_markdown(self) -> str:
        """The untrained-network check, to read before any comparison between arms: per arm the paired
        difference to random init per task and on the Average, with its CI, and the verdict."""
        if self.untrained_delta is None:
            return (f"**Untrained-network check:** {self.reference_note}\n" if self.reference_note else "")
        cols = self.columns[:-1]  # tasks and Average (IQM is not a per-seed quantity)
        head = ["Arm", "Seeds"] + [f"Δ {c} vs random init" for c in cols] + ["Verdict"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---:"] + ["---:"] * len(cols) + ["---"]) + "|"]
        verdicts = self.untrained_verdicts()
        for a, arm in enumerate(self.arms):
            cells = [self._arm_label(arm), str(int(self.untrained_pairs[a, len(cols) - 1]))]
            for c in range(len(cols)):
                cells.append(self._fmt_signed(self.untrained_delta[a, c]) + " "
                             + self._ci(self.untrained_lo[a, c], self.untrained_hi[a, c], signed=True))
            v = verdicts[arm]
            text = UNTRAINED_TEXT[v]
            cells.append(f"**⚠ {text}**" if v in ("indistinguishable", "worse") else text)
            lines.append("| " + " | ".join(cells) + " |")
        lvl = int(self.level * 100)
        return ("**Untrained-network check** (before any comparison between arms): Δ = arm minus random init (the "
                "same architecture, untrained, on the same tasks and folds), paired by seed and fold, "
                f"{lvl}% paired-bootstrap CI. " + self.untrained_summary() + "\n\n" + "\n".join(lines) + "\n")

    def _ref_cells(self, r: int, c: int) -> tuple[str, str]:
        val = self._fmt(self.ref_mean[r, c])
        ci = self._ci(self.ref_lo[r, c], self.ref_hi[r, c]) if self.has_ci else ""
        return val, ci

    def _ref_label(self, name: str) -> str:
        return _REF_ROW_LABELS.get(name, f"{name} (reference)")

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
            + (f" [{int(self.level * 100)}% bootstrap CI; {self.variance_note()}]" if self.has_ci else "")
            + ". Average: mean over tasks; IQM: interquartile mean over (seed, task) scores.",
            "Bold: best in column; underlined: not significantly different from the best (paired bootstrap CI of the difference contains 0).",
        ]
        if self.baseline is not None:
            parts.append(
                f"Δ: Average minus baseline '{self.baseline}', paired by seed, with its CI; P(Δ>0): bootstrap probability of improvement."
            )
        if self.references:
            parts.append("Reference rows (not ranked): "
                         + ", ".join(REFERENCE_LABELS.get(r, r) for r in self.references)
                         + ", evaluated once on the same tasks and folds; their CI reflects the folds only.")
        return " ".join(parts)

    # ---------------------------------------------------------------- renderers
    def to_markdown(self, untrained: bool = True) -> str:
        """The table; ``untrained``: the untrained-network check first (before any comparison of arms)."""
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
        for r, name in enumerate(self.references):
            cells = [f"*{self._ref_label(name)}*", "ref"]
            for c in range(len(self.columns)):
                val, ci = self._ref_cells(r, c)
                cells.append(f"*{val}* {ci}".strip())
            if self.delta is not None:
                cells += ["reference", ""]
            lines.append("| " + " | ".join(cells) + " |")
        check = self.untrained_markdown() if untrained else ""
        out = (check + "\n" if check else "") + "\n".join(lines) + "\n\n" + self._caption() + "\n"
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
        if self.references:
            out.append(r"\midrule")
            for r, name in enumerate(self.references):
                cells = [r"\emph{" + esc(self._ref_label(name)) + "}", "ref"]
                for c in range(len(self.columns)):
                    val, ci = self._ref_cells(r, c)
                    cells.append(val + (rf"\,{{\scriptsize {ci}}}" if ci else ""))
                if self.delta is not None:
                    cells += ["reference", ""]
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
        caption = self._caption() + (" Untrained-network check: " + self.untrained_summary() if self.untrained_summary() else "")
        out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def to_html(self, untrained: bool = True) -> str:
        head = ["Arm", "Seeds"] + self.columns + (["Δ Average", "P(Δ>0)"] if self.delta is not None else [])
        rows = []
        if untrained and (check := self.untrained_markdown()):
            from pathfm.analysis.markdown import md_table_to_html

            rows.append(md_table_to_html(check.replace("**", "")))
        rows += ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        for a, arm in enumerate(self.arms):
            cells = [html.escape(self._arm_label(arm)), self.seeds_label(a)]
            for c in range(len(self.columns)):
                val, ci = self._marked_cells(a, c, "<b>{}</b>", "<u>{}</u>")
                cells.append(f"{val} <small>{ci}</small>" if ci else val)
            if self.delta is not None:
                cells += [html.escape(x) for x in self._delta_cells(a)]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        for r, name in enumerate(self.references):
            cells = [f"<i>{html.escape(self._ref_label(name))}</i>", "ref"]
            for c in range(len(self.columns)):
                val, ci = self._ref_cells(r, c)
                cells.append(f"<i>{val}</i> <small>{ci}</small>" if ci else f"<i>{val}</i>")
            if self.delta is not None:
                cells += ["reference", ""]
            rows.append('<tr style="color:#555">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        rows += ["</tbody>", "</table>", f"<p><small>{html.escape(self._caption())}</small></p>"]
        if self.comparisons:
            from pathfm.analysis.markdown import md_table_to_html

            rows.append(md_table_to_html(self.comparisons_markdown()))
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
        if self.untrained_delta is not None:
            verdicts = {col: self.untrained_verdicts(col) for col in self.columns[:-1]}
            for r, (a, c) in zip(recs, [(a, c) for a in range(len(self.arms)) for c in range(len(self.columns))]):
                r.update(delta_random_init=self.untrained_delta[a, c], delta_random_init_ci_low=self.untrained_lo[a, c],
                         delta_random_init_ci_high=self.untrained_hi[a, c],
                         vs_random_init=verdicts.get(self.columns[c], {}).get(self.arms[a]))
        for r_i, name in enumerate(self.references):
            for c, col in enumerate(self.columns):
                recs.append({"arm": name, "column": col, "metric": self.metric, "mean": self.ref_mean[r_i, c],
                             "ci_low": self.ref_lo[r_i, c], "ci_high": self.ref_hi[r_i, c], "baseline": self.baseline,
                             "reference": True})
        for cmp in self.comparisons:
            for c, col in enumerate(self.columns[:-1]):
                recs.append({"arm": cmp["arm"], "column": col, "metric": self.metric, "baseline": cmp["reference"],
                             "delta": cmp["delta"][c], "delta_ci_low": cmp["lo"][c], "delta_ci_high": cmp["hi"][c],
                             "p_improve": cmp["p_improve"][c], "n_seeds": int(cmp["n_pairs"][c])})
        frame = pl.DataFrame(recs, infer_schema_length=None)
        frame = frame.with_columns(pl.when(pl.col("mean").is_null() & pl.col("delta").is_not_null()).then(pl.lit("comparison"))
                                   .otherwise(pl.lit("cell")).alias("row_type")) if "delta" in frame.columns else \
            frame.with_columns(pl.lit("cell").alias("row_type"))
        if "reference" in frame.columns:
            frame = frame.with_columns(pl.when(pl.col("reference").fill_null(False)).then(pl.lit("reference"))
                                       .otherwise(pl.col("row_type")).alias("row_type")).drop("reference")
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
