"""How an ablation table is written: Markdown (terminal/GitHub), LaTeX (booktabs), HTML, CSV and a long polars
frame, plus the untrained-network check and the planted-comparison block as text. The numbers are computed
in :mod:`pathfm.analysis.table` (:class:`~pathfm.analysis.table.AblationTable` renders through the
:class:`TableRendering` methods it inherits); nothing here computes a statistic.
"""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import Path
from typing import Literal

import polars as pl

from pathfm.io import atomic_write_text

NA = "n/a"
REFERENCE_LABELS = {"random_init": "random init (untrained)", "color_histogram": "colour histogram"}
_REF_ROW_LABELS = {"random_init": "random init (untrained, reference)", "color_histogram": "colour histogram (reference)"}
UNTRAINED_TEXT = {
    "beats": "beats random init",
    "indistinguishable": "not distinguishable from an untrained network",
    "worse": "worse than an untrained network",
    NA: "not established (fewer than 2 seeds paired with random init)",
}


def _p(p: float) -> str:
    """A p-value with two significant digits (``<0.0001`` below that)."""
    return "<0.0001" if p < 1e-4 else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def _tex_minus(cell: str) -> str:
    """A typographic minus for negative numbers in LaTeX cells (``-0.017`` -> ``$-$0.017``)."""
    return re.sub(r"(?<![\w.$])-(?=\d)", r"$-$", cell)


class TableRendering:
    """The renderers of :class:`pathfm.analysis.table.AblationTable` (a mixin: it reads the table's numbers,
    ``digits``, ``level`` and its statistics methods ``has_ci``, ``seeds_label``, ``variance_note`` and
    ``untrained_verdicts``)."""

    def _fmt(self, v: float) -> str:
        return NA if v is None or not math.isfinite(v) else f"{v:.{self.digits}f}"

    def _fmt_signed(self, v: float) -> str:
        return NA if v is None or not math.isfinite(v) else f"{v:+.{self.digits}f}"

    def _fmt_p(self, p_adj: float, p: float) -> str:
        """``0.012* (0.004)``: the Holm-adjusted p-value (``*`` below alpha) and the unadjusted one."""
        if p_adj is None or not math.isfinite(p_adj):
            return NA
        star = "*" if p_adj < self.alpha else ""
        return f"{_p(p_adj)}{star} ({_p(p)})"

    def _ci(self, lo: float, hi: float, signed: bool = False) -> str:
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"[{NA}]"
        f = self._fmt_signed if signed else self._fmt
        return f"[{f(lo)}, {f(hi)}]"

    def _arm_label(self, arm: str) -> str:
        return arm + (" (baseline)" if arm == self.baseline and "baseline" not in arm.lower() else "")

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
        cols = self.columns[:-1]  # tasks and Average
        avg = self.columns.index("Average")
        head = ["Arm", "Seeds"] + [f"Δ {c} vs random init" for c in cols] + ["p Average, Holm (raw)", "Verdict"]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---", "---:"] + ["---:"] * len(cols) + ["---:", "---"]) + "|"]
        verdicts = self.untrained_verdicts()
        for a, arm in enumerate(self.arms):
            cells = [self._arm_label(arm), str(int(self.untrained_pairs[a, len(cols) - 1]))]
            for c in range(len(cols)):
                cells.append(self._fmt_signed(self.untrained_delta[a, c]) + " "
                             + self._ci(self.untrained_lo[a, c], self.untrained_hi[a, c], signed=True))
            cells.append(self._fmt_p(self.untrained_p_adj[a, avg], self.untrained_p[a, avg]))
            v = verdicts[arm]
            text = UNTRAINED_TEXT[v]
            cells.append(f"**⚠ {text}**" if v in ("indistinguishable", "worse") else text)
            lines.append("| " + " | ".join(cells) + " |")
        lvl = int(self.level * 100)
        n_init = self.ref_seeds[self.references.index("random_init")] if self.ref_seeds else 1
        return ("**Untrained-network check** (before any comparison between arms): Δ = arm minus random init (the "
                f"same architecture, untrained, at {n_init} init seed{'s' if n_init != 1 else ''}, on the same tasks "
                f"and folds), {lvl}% interval of an unpaired t-test over seeds (Welch's standard error, min(n)-1 degrees of "
                f"freedom); the verdict is that test on the Average, Holm over "
                f"the arms (* = adjusted p < {self.alpha}). " + self.untrained_summary() + "\n\n" + "\n".join(lines) + "\n")

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
        return d, self._fmt_p(self.delta_p_adj[a, c], self.delta_p[a, c])

    def _caption(self) -> str:
        parts = [
            f"Metric: {self.metric}; cells: mean over seeds"
            + (f" [{int(self.level * 100)}% CI, {self.variance_note()}]" if self.has_ci else "")
            + ". Average: mean over tasks; IQM: per seed, interquartile mean over tasks.",
            "Bold: best in column; underlined: no other arm significantly better (paired t-tests of all pairs over "
            f"shared seeds, Holm over the pairs, α = {self.alpha}).",
        ]
        if self.baseline is not None:
            parts.append(
                f"Δ: Average minus baseline '{self.baseline}', paired by seed, with its {int(self.level * 100)}% t "
                f"interval; p: paired t-test, Holm-adjusted over the arms (* = below {self.alpha}), unadjusted in brackets."
            )
        if self.references:
            n_init = max(self.ref_seeds) if self.ref_seeds else 1
            parts.append("Reference rows (not ranked): "
                         + ", ".join(REFERENCE_LABELS.get(r, r) for r in self.references)
                         + " on the same tasks and folds"
                         + (f"; random init's CI is over its {n_init} init seeds." if n_init >= 2 else
                            "; evaluated once (no CI)."))
        if self.design:
            parts.append(self.design)
        return " ".join(parts)

    # ---------------------------------------------------------------- renderers
    def to_markdown(self, untrained: bool = True) -> str:
        """The table; ``untrained``: the untrained-network check first (before any comparison of arms)."""
        head = ["Arm", "Seeds"] + self.columns
        if self.delta is not None:
            head += ["Δ Average", "p (Holm; raw)"]
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
            head += [r"$\Delta$ Average", r"$p$ (Holm; raw)"]
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
                if self.delta is not None:  # Δ per task under the tasks, Δ Average under Average, p under p
                    row += cells[:-1] + ["", "", cells[-1]]
                else:
                    row += cells[:-2] + [f"{cells[-2]} (p={cells[-1]})", ""]
                out.append(" & ".join(row[:2] + [_tex_minus(c) for c in row[2:]]) + r" \\")
        caption = self._caption() + (" Untrained-network check: " + self.untrained_summary() if self.untrained_summary() else "")
        out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def to_html(self, untrained: bool = True) -> str:
        head = ["Arm", "Seeds"] + self.columns + (["Δ Average", "p (Holm; raw)"] if self.delta is not None else [])
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
        for c in range(len(self.columns) - 1):  # tasks and Average
            cells.append(self._fmt_signed(cmp["delta"][c]) + " " + self._ci(cmp["lo"][c], cmp["hi"][c], signed=True))
        avg = len(self.columns) - 2
        return cells + [self._fmt_p(cmp["p_adj"][avg], cmp["p"][avg])]

    def comparisons_markdown(self) -> str:
        """The study's planned comparisons (arm vs its reference), paired by seed."""
        head = ["Comparison", "Pairs"] + [f"Δ {c}" for c in self.columns[:-1]] + ["p Average (Holm; raw)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for cmp in self.comparisons:
            n = int(cmp["n_pairs"][len(self.columns) - 2])
            lines.append("| " + " | ".join([f"{cmp['arm']} vs {cmp['reference']}", str(n)] + self._comparison_cells(cmp)) + " |")
        return ("\n".join(lines) + "\n\nPlanned comparisons: difference arm minus reference per column, paired by seed, "
                f"{int(self.level * 100)}% t interval; p: paired t-test on the Average, Holm-adjusted over the planned "
                f"comparisons (* = below {self.alpha}), unadjusted in brackets.\n")

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
                             delta_ci_high=self.delta_hi[a, c], p=self.delta_p[a, c], p_holm=self.delta_p_adj[a, c])
                recs.append(r)
        if self.untrained_delta is not None:
            verdicts = {col: self.untrained_verdicts(col) for col in self.columns[:-1]}
            for r, (a, c) in zip(recs, [(a, c) for a in range(len(self.arms)) for c in range(len(self.columns))]):
                r.update(delta_random_init=self.untrained_delta[a, c], delta_random_init_ci_low=self.untrained_lo[a, c],
                         delta_random_init_ci_high=self.untrained_hi[a, c], p_random_init=self.untrained_p[a, c],
                         p_holm_random_init=self.untrained_p_adj[a, c],
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
                             "p": cmp["p"][c], "p_holm": cmp["p_adj"][c], "n_seeds": int(cmp["n_pairs"][c])})
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
