"""The picture of an ablation table: per arm (rows in the table's order, baseline first) the mean score over
seeds with its t interval, and beside it the paired difference to the baseline with its t interval, a line at
0 and the arms whose difference is significant after Holm's correction highlighted. The reference rows
(random init: the same architecture untrained, over its init seeds; colour histograms) are vertical lines
with their interval as a band in the score panel, and arms that do not beat the untrained network are
marked. Every number is read from the
:class:`~pathfm.analysis.table.AblationTable` (nothing is recomputed), so figure and table always agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pathfm.analysis.load import ResultsError
from pathfm.analysis.figures import REFERENCE_STYLE
from pathfm.analysis.table import AblationTable
from pathfm.analysis.table_render import NA, REFERENCE_LABELS, UNTRAINED_TEXT

BETTER, WORSE, UNSURE, BASE = "#0072B2", "#D55E00", "0.55", "#000000"  # Okabe-Ito blue / vermillion, grey, black
UNTRAINED_MARK = "  (≤ untrained)"  # appended to the label of an arm that does not beat random init


def _num(v: float) -> float | str:
    return float(v) if v is not None and math.isfinite(v) else NA


def _finite(*vs: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in vs)


def significance(table: AblationTable, column: str = "Average") -> dict[str, str]:
    """Per arm: ``better`` / ``worse`` (paired t-test of Δ, Holm-adjusted p below alpha, direction by
    ``higher_is_better``), ``unsure``, ``n/a`` (fewer than 2 shared seeds) or ``baseline``."""
    verdicts = table.delta_verdicts(column)
    return {arm: "baseline" if arm == table.baseline else v for arm, v in verdicts.items()}


def figure_caption(table: AblationTable, column: str = "Average") -> str:
    """The reader's caption: what the points and bars are, and which arms have no CI (``n/a``)."""
    c = table.columns.index(column)
    lvl = int(round(table.level * 100))
    no_ci = [arm for a, arm in enumerate(table.arms) if not _finite(table.lo[a, c], table.hi[a, c])]
    text = (f"{column} {table.metric} per arm (mean over seeds; bars: {lvl}% CI, {table.variance_note()}; "
            "the same numbers as the table).")
    if table.delta is not None:
        sig = significance(table, column)
        hits = [a for a, s in sig.items() if s in ("better", "worse")]
        text += (f" Right: Δ = arm minus baseline '{table.baseline}', paired by seed, with its {lvl}% t interval; "
                 f"coloured: paired t-test significant after Holm over the arms (α = {table.alpha}; blue better, "
                 "vermillion worse)"
                 + (f": {', '.join(hits)}." if hits else "; none here."
                    if any(v == "unsure" for v in sig.values()) else f"; Δ CI {NA} for every arm."))
    else:
        text += " No baseline arm, so no Δ panel (pass --baseline or set baseline_arm in sweep_meta.json)."
    if no_ci:
        text += f" CI {NA} (single seed, point only) for: {', '.join(no_ci)}."
    if table.references:
        text += (" Vertical lines: reference rows (" + ", ".join(REFERENCE_LABELS.get(r, r) for r in table.references)
                 + ") on the same tasks and folds, band: random init's CI over its init seeds.")
    if table.untrained_delta is not None:
        v = table.untrained_verdicts(column)
        flagged = [a for a, x in v.items() if x in ("indistinguishable", "worse")]
        text += (f" Marked '{UNTRAINED_MARK.strip()}': not shown to beat random init (unpaired t-test over seeds, Holm "
                 f"over the arms): {', '.join(flagged)}." if flagged else
                 " Every arm with a CI beats random init (unpaired t-test over seeds, Holm over the arms).")
    elif table.reference_note:
        text += " " + table.reference_note[0].upper() + table.reference_note[1:]
    return text


def plot_table(table: AblationTable, stem: str | Path, column: str = "Average",
               size: Literal["single", "double"] | None = None) -> list[Path]:
    """Draw ``table`` (score panel, and a Δ-vs-baseline panel when it has a baseline) and write
    ``stem.{pdf,svg,png}`` + ``stem.json`` (arms, seeds, trial ids and every plotted number); returns the paths."""
    from matplotlib.lines import Line2D

    from pathfm.analysis.figures import new_figure, save_figure, style

    if column not in table.columns:
        raise ResultsError(f"column '{column}' is not in the table (columns: {table.columns})")
    if not table.arms:
        raise ResultsError("the ablation table has no arms to plot")
    c = table.columns.index(column)
    n = len(table.arms)
    has_delta = table.delta is not None
    size = size or ("double" if has_delta else "single")
    width = {"single": 3.5, "double": 7.16}[size]
    height = 0.9 + 0.24 * n  # one readable row per arm, room for the axis labels and legend
    with style():
        fig, axes = new_figure(size, aspect=height / width, ncols=2 if has_delta else 1)
        ax = axes[0, 0]
        y = np.arange(n)
        labels = []
        untrained = table.untrained_verdicts(column)
        for a, arm in enumerate(table.arms):
            m, lo, hi = table.mean[a, c], table.lo[a, c], table.hi[a, c]
            is_base = arm == table.baseline
            col, mk = (BASE, "D") if is_base else (BETTER, "o")
            seeds = int(table.n_seeds[a, c])
            labels.append(table._arm_label(arm) + (f"  (n={seeds})" if seeds < 2 else "")
                          + (UNTRAINED_MARK if untrained.get(arm) in ("indistinguishable", "worse") else ""))
            if not _finite(m):
                ax.text(0.01, a, f"{NA} (no seed has every task)", transform=ax.get_yaxis_transform(),
                        va="center", fontsize=6, color="0.4")
                continue
            if _finite(lo, hi):
                ax.errorbar([m], [a], xerr=[[m - lo], [hi - m]], fmt=mk, color=col, capsize=2, zorder=3)
            else:  # single seed: the point only
                ax.plot([m], [a], mk, color=col, mfc="white", zorder=3)
        ref_handles = _reference_lines(ax, table, c)
        if table.baseline is not None:
            b = table.arms.index(table.baseline)
            if _finite(table.mean[b, c]):
                ax.axvline(table.mean[b, c], color="0.5", lw=0.7, ls=":", zorder=1)
                ref_handles.append(Line2D([], [], color="0.5", lw=0.7, ls=":",
                                          label=f"baseline mean: {table.mean[b, c]:.{table.digits}f}"))
        ax.set_yticks(y, labels)
        ax.set_ylim(n - 0.5, -0.5)  # table order top to bottom
        ax.grid(axis="y", visible=False)
        lvl = int(round(table.level * 100))
        ax.set_xlabel(f"{column} {table.metric.replace('_', ' ')}")
        ax.set_title(f"Mean and {lvl}% t interval over seeds", loc="left")
        handles = []
        if has_delta:
            handles = _delta_panel(axes[0, 1], table, c, ax)
            sig = significance(table, column)
            for tick, arm in zip(ax.get_yticklabels(), table.arms):
                if sig.get(arm) in ("better", "worse"):
                    tick.set_color(BETTER if sig[arm] == "better" else WORSE)
                    tick.set_fontweight("bold")
        handles = ref_handles + handles
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=6.5)
        caption = _caption_data(table, column)
        return save_figure(fig, stem, caption)


def _reference_lines(ax, table: AblationTable, c: int) -> list:
    """A vertical line per reference row at its mean (band: its CI over init seeds, when there are several); returns legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    for r, name in enumerate(table.references):
        m, lo, hi = table.ref_mean[r, c], table.ref_lo[r, c], table.ref_hi[r, c]
        if not _finite(m):
            continue
        colour, ls = REFERENCE_STYLE.get(name, ("0.3", ":"))
        ax.axvline(m, color=colour, lw=1.0, ls=ls, zorder=1)
        if _finite(lo, hi):
            ax.axvspan(lo, hi, color=colour, alpha=0.12, lw=0, zorder=0)
        handles.append(Line2D([], [], color=colour, ls=ls, lw=1.0, label=f"{REFERENCE_LABELS.get(name, name)}: {m:.{table.digits}f}"))
    return handles


def _delta_panel(ax, table: AblationTable, c: int, score_ax) -> list:
    """Δ vs the baseline with its paired CI; returns legend handles for the categories drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ax.sharey(score_ax)
    ax.tick_params(labelleft=False)
    ax.grid(axis="y", visible=False)
    sig = significance(table, table.columns[c])
    colours = {"better": BETTER, "worse": WORSE, "unsure": UNSURE, NA: UNSURE}
    drawn = set()
    for a, arm in enumerate(table.arms):
        d, lo, hi = table.delta[a, c], table.delta_lo[a, c], table.delta_hi[a, c]
        kind = sig[arm]
        if kind == "baseline":
            ax.text(0.02, a, "baseline", transform=ax.get_yaxis_transform(), va="center", fontsize=6,
                    color="0.35", style="italic")
            continue
        if not _finite(d):
            ax.text(0.02, a, f"Δ {NA} (no seed shared with the baseline)", transform=ax.get_yaxis_transform(),
                    va="center", fontsize=6, color="0.4")
            continue
        col = colours[kind]
        if kind == NA:  # no CI: the point only
            ax.plot([d], [a], "o", color=col, mfc="white", zorder=3)
        else:
            ax.errorbar([d], [a], xerr=[[d - lo], [hi - d]], fmt="o", color=col, capsize=2, zorder=3,
                        mfc=col if kind != "unsure" else "white")
        drawn.add(kind)
    ax.axvline(0.0, color="0.2", lw=0.8, zorder=1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=False))  # few ticks: signed labels never collide
    left, right = ax.get_xlim()  # keep 0 inside and the axis roughly balanced around it
    span = max(abs(left), abs(right))
    ax.set_xlim(min(left, -0.15 * span), max(right, 0.15 * span))
    lvl = int(round(table.level * 100))
    ax.set_xlabel(f"Δ {table.columns[c]} vs baseline '{table.baseline}'")
    ax.set_title(f"Paired by seed, {lvl}% t interval; colour: Holm-adjusted p < {table.alpha}", loc="left")
    better_word = "higher" if table.higher_is_better else "lower"
    worse_word = "lower" if table.higher_is_better else "higher"
    legend = [("better", BETTER, BETTER, f"significant ({better_word}: better)"),
              ("worse", WORSE, WORSE, f"significant ({worse_word}: worse)"),
              ("unsure", UNSURE, "white", "not significant"),
              (NA, UNSURE, "white", f"single seed: CI {NA}")]
    return [Line2D([], [], marker="o", ls="", color=col, mfc=face, label=text)
            for kind, col, face, text in legend if kind in drawn]


def _caption_data(table: AblationTable, column: str) -> dict[str, Any]:
    """Sidecar/metadata: arms in order, their seeds and trial ids, and every number drawn."""
    c = table.columns.index(column)
    sig = significance(table, column)
    untrained = table.untrained_verdicts(column)
    rows = []
    for a, arm in enumerate(table.arms):
        r = {"arm": arm, "n_seeds": int(table.n_seeds[a, c]), "mean": _num(table.mean[a, c]),
             "ci_low": _num(table.lo[a, c]), "ci_high": _num(table.hi[a, c])}
        if table.delta is not None:
            r.update(delta=_num(table.delta[a, c]), delta_ci_low=_num(table.delta_lo[a, c]),
                     delta_ci_high=_num(table.delta_hi[a, c]), p=_num(table.delta_p[a, c]),
                     p_holm=_num(table.delta_p_adj[a, c]), significance=sig[arm])
        if table.untrained_delta is not None:
            r.update(delta_random_init=_num(table.untrained_delta[a, c]),
                     delta_random_init_ci_low=_num(table.untrained_lo[a, c]),
                     delta_random_init_ci_high=_num(table.untrained_hi[a, c]),
                     vs_random_init=untrained[arm], vs_random_init_text=UNTRAINED_TEXT[untrained[arm]])
        rows.append(r)
    references = [{"reference": name, "mean": _num(table.ref_mean[r, c]), "ci_low": _num(table.ref_lo[r, c]),
                   "ci_high": _num(table.ref_hi[r, c])} for r, name in enumerate(table.references)]
    return {
        "title": f"Ablation: {column} {table.metric}" + (f" vs baseline {table.baseline}" if table.baseline else ""),
        "kind": "ablation_table",
        "caption": figure_caption(table, column),
        "column": column,
        "metric": table.metric,
        "level": table.level,
        "baseline": table.baseline,
        "higher_is_better": table.higher_is_better,
        "arms": list(table.arms),
        "seeds": {arm: table.seeds.get(arm, []) for arm in table.arms},
        "trial_ids": {arm: table.trial_ids.get(arm, []) for arm in table.arms},
        "rows": rows,
        "references": references,
        "notes": list(table.notes),
    }
