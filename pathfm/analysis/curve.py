"""Data-efficiency curves: score vs data size (slides, tiles seen or GPU-hours) on a log x-axis, with
per-point Student-t intervals over seeds and a saturating power law ``y = a - b * x**(-c)`` per arm (the fit,
its bootstrap bands, the held-out check and the size needed to reach a target: :mod:`pathfm.analysis.power_law`). Here:
assembling the curves from results (:func:`data_efficiency`), their table and plotting (:func:`plot_curve`).
With fewer than 4 distinct sizes the fit is reported as under-determined (points and CIs are still drawn).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import ResultsError, Selection, trial_values
from pathfm.results import PARAM_PREFIX
from pathfm.analysis.power_law import HoldoutCheck, PowerLawFit, fit_power_law, holdout_check, power_law
from pathfm.analysis.references import reference_levels
from pathfm.analysis.stats import t_interval
from pathfm.analysis.table_render import REFERENCE_LABELS

X_ALIASES = {"n_slides": "param.n_slides", "slides": "param.n_slides", "tiles": "tiles_seen", "gpu": "gpu_hours"}
X_LABELS = {"param.n_slides": "training slides", "param.n_tiles": "training tiles (fixed pool)", "tiles_seen": "tiles seen",
            "gpu_hours": "GPU-hours"}


@dataclass
class ArmCurve:
    arm: str
    points: pl.DataFrame  # x, mean, ci_low, ci_high, n
    fit: PowerLawFit
    holdout: HoldoutCheck | None
    target: tuple[float, float, float] | None  # x needed (point, lo, hi)
    trial_ids: list[str]
    seeds: list[str]


@dataclass
class CurveResult:
    x: str
    arms: list[ArmCurve]
    target: float | None
    metric: str
    references: list[dict] = field(default_factory=list)  # random init / colour histogram: mean and interval

    def to_markdown(self) -> str:
        xl = X_LABELS.get(self.x, self.x)
        head = ["Arm", "sizes", "a (asymptote)", "exponent c [95% CI]", "fit", f"held-out largest {xl}"]
        if self.target is not None:
            head.append(f"{xl} to reach {self.target:g}")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for ac in self.arms:
            f = ac.fit
            a = f"{f.a:.3f} [{f.a_ci[0]:.3f}, {f.a_ci[1]:.3f}]" if f.ok else "n/a"
            c = f"{f.c:.3f} [{f.c_ci[0]:.3f}, {f.c_ci[1]:.3f}]" if f.ok else "n/a"
            h = "n/a (needs >= 5 sizes)"
            if ac.holdout is not None:
                ho = ac.holdout
                h = (f"pred {ho.predicted:.3f} [{ho.pred_lo:.3f}, {ho.pred_hi:.3f}] vs obs {ho.observed:.3f}: "
                     f"error {ho.error:+.3f} ({'within' if ho.covered else 'OUTSIDE'} 95% uncertainty)")
            row = [ac.arm, str(ac.points.height), a, c, f.status + (f": {f.message}" if f.message else ""), h]
            if self.target is not None:
                if ac.target is None or not f.ok:
                    row.append("n/a")
                else:
                    p, lo, hi = ac.target
                    row.append(f"{_fmt_x(p)} [{_fmt_x(lo)}, {_fmt_x(hi)}]")
            lines.append("| " + " | ".join(row) + " |")
        text = "\n".join(lines) + f"\n\nFit: {self.metric} = a - b * {xl}^(-c), bootstrap 95% CIs.\n"
        for r in self.references:
            interval = (f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}] over {r['n_init_seeds']} init seeds"
                        if math.isfinite(r["ci_low"]) else "")
            text += f"\nReference: {REFERENCE_LABELS.get(r['reference'], r['reference'])} {r['mean']:.3f}{interval}."
        return text + ("\n" if self.references else "")

    def summary(self) -> dict[str, Any]:
        return {
            "x": self.x, "metric": self.metric, "target": self.target,
            "arms": [
                {"arm": ac.arm, "points": ac.points.to_dicts(), "fit": ac.fit.summary(),
                 "holdout": None if ac.holdout is None else asdict(ac.holdout), "x_for_target": ac.target,
                 "trial_ids": ac.trial_ids, "seeds": ac.seeds}
                for ac in self.arms
            ],
            "references": self.references,
        }


def _fmt_x(v: float) -> str:
    if not math.isfinite(v):
        return "not reached" if v > 0 else "n/a"
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def resolve_x(x: str, columns: Sequence[str]) -> str:
    x = X_ALIASES.get(x, x)
    if x not in columns and PARAM_PREFIX + x in columns:
        x = PARAM_PREFIX + x
    if x not in columns:
        raise ResultsError(f"x column '{x}' not in the results (columns: {sorted(columns)}); pass --x "
                           "param.n_slides, tiles_seen or gpu_hours")
    return x


def data_efficiency(
    source,
    x: str = "param.n_slides",
    sel: Selection | None = None,
    target: float | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    arms: Sequence[str] | None = None,
    group_by: str | None = None,
) -> CurveResult:
    """Per arm: per-x mean score with CI, the power-law fit, the held-out check and the target estimate.

    The score of a trial is the mean over the selected tasks (and folds) at the selected step. Curves are
    drawn per arm, or per value of the searched/labelled param ``group_by`` (e.g. ``variant`` of the data
    ladder, whose arms are one data size each). When every arm holds a single x value and no
    ``group_by`` is given, all trials form one curve.
    """
    sel = sel or Selection()
    from pathfm.analysis.load import as_lazy
    from pathfm.results import fill_defaults

    lf, _ = as_lazy(source)
    x = resolve_x(x, fill_defaults(lf).collect_schema().names())
    # arms are the ablation arms (or the other searched knobs); the data-size knob and x are the axis
    sel = Selection(**{**sel.__dict__, "arm_exclude": tuple(sel.arm_exclude) + (x, "param.n_slides")})
    tv = trial_values(lf, sel).filter(pl.col(x).is_not_null())
    if tv.is_empty():
        raise ResultsError(f"no trials with both a score and a value of '{x}'")
    if group_by:
        col = group_by if group_by in tv.columns else PARAM_PREFIX + group_by
        if col not in tv.columns:
            raise ResultsError(f"--group-by '{group_by}': no column '{col}' (params: {[c for c in tv.columns if c.startswith(PARAM_PREFIX)]})")
        tv = tv.with_columns(pl.col(col).cast(pl.String).fill_null("None").alias("arm"))
    elif tv.group_by("arm").agg(pl.col(x).n_unique().alias("n"))["n"].max() == 1 and tv[x].n_unique() > 1:
        tv = tv.with_columns(pl.lit("all arms").alias("arm"))  # a ladder of one-size arms: one curve
    all_arms = sorted(tv["arm"].unique().to_list())
    if arms:
        bad = [a for a in arms if a not in all_arms]
        if bad:
            raise ResultsError(f"arm(s) {bad} not in the results (arms present: {all_arms})")
        all_arms = list(arms)
    out = []
    for i, arm in enumerate(all_arms):
        d = tv.filter(pl.col("arm") == arm)
        xs = d[x].cast(pl.Float64).to_numpy()
        ys = d["value"].to_numpy()
        pts = []
        for ux in np.unique(xs):
            m, lo, hi, n = (float(v) for v in t_interval(ys[xs == ux], level))  # over the seeds at this size
            pts.append({"x": float(ux), "mean": m, "ci_low": lo, "ci_high": hi, "n": int(n)})
        fit = fit_power_law(xs, ys, n_boot=n_boot, level=level, seed=seed + i)
        hold = holdout_check(xs, ys, n_boot=max(n_boot // 2, 20), level=level, seed=seed + i) if fit.ok else None
        tgt = fit.x_for(target, level) if (target is not None and fit.ok) else None
        out.append(ArmCurve(arm, pl.DataFrame(pts), fit, hold, tgt, sorted(d["trial_id"].to_list()),
                            sorted(str(s) for s in d["replicate"].unique().to_list())))
    metric = ",".join(sel.metrics)
    refs = reference_levels(source, sel, level) if sel.backbone == "trained" else []
    return CurveResult(x, out, target, metric, refs)


def plot_curve(result: CurveResult, stem: str | Path, size: Literal["single", "double"] = "single",
               level: float = 0.95, extend: float = 3.0) -> list[Path]:
    """Draw every arm on one log-x figure: points with CIs, fitted curve with its band (dashed beyond the
    largest measured x, up to ``extend`` times it), the target line; write PDF/SVG/PNG + JSON."""
    from pathfm.analysis.figures import MARKERS, REFERENCE_STYLE, color, new_figure, save_figure, style

    with style():
        fig, axes = new_figure(size, aspect=0.9)  # room for the legend below the axes
        ax = axes[0, 0]
        for i, ac in enumerate(result.arms):
            col = color(i)
            p = ac.points
            xs, m = p["x"].to_numpy(), p["mean"].to_numpy()
            lo, hi = p["ci_low"].to_numpy(), p["ci_high"].to_numpy()
            has = np.isfinite(lo)
            yerr = np.vstack([np.where(has, m - lo, 0), np.where(has, hi - m, 0)])
            label = ac.arm
            if ac.fit.ok:
                label += f" (c={ac.fit.c:.2f} [{ac.fit.c_ci[0]:.2f}, {ac.fit.c_ci[1]:.2f}])"
            else:
                label += f" ({ac.fit.status})"
            ax.errorbar(xs, m, yerr=yerr, fmt=MARKERS[i % len(MARKERS)], color=col, capsize=2, label=label, zorder=3)
            if ac.fit.ok:
                gx = np.geomspace(xs.min(), xs.max(), 200)
                ex = np.geomspace(xs.max(), xs.max() * extend, 60)
                ax.plot(gx, ac.fit.predict(gx), "-", color=col, lw=1.2, zorder=2)
                ax.plot(ex, ac.fit.predict(ex), "--", color=col, lw=1.0, zorder=2)
                allx = np.concatenate([gx, ex])
                blo, bhi = ac.fit.band(allx, level)
                ax.fill_between(allx, blo, bhi, color=col, alpha=0.18, lw=0, zorder=1)
            else:
                ax.plot(xs, m, ":", color=col, lw=1.0)
        for r in result.references:  # the honesty baselines: a line each, band = interval over init seeds
            colour, ls = REFERENCE_STYLE.get(r["reference"], ("0.3", ":"))
            ax.axhline(r["mean"], color=colour, ls=ls, lw=1.0, zorder=1,
                       label=f"{REFERENCE_LABELS.get(r['reference'], r['reference'])}: {r['mean']:.3f}")
            if math.isfinite(r["ci_low"]):
                ax.axhspan(r["ci_low"], r["ci_high"], color=colour, alpha=0.12, lw=0, zorder=0)
        if result.target is not None:
            ax.axhline(result.target, color="0.3", lw=0.8, ls=":", zorder=0)
            ax.annotate(f"target {result.target:g}", xy=(0.01, result.target), xycoords=("axes fraction", "data"),
                        va="bottom", fontsize=6, color="0.3")
        ax.set_xscale("log")
        _plain_log_ticks(ax, np.concatenate([ac.points["x"].to_numpy().astype(float) for ac in result.arms]))
        ax.set_xlabel(X_LABELS.get(result.x, result.x) + " (log scale)")
        ax.set_ylabel(result.metric.replace("_", " "))
        handles, labels = ax.get_legend_handles_labels()
        if any(ac.fit.ok for ac in result.arms):
            from matplotlib.lines import Line2D
            from matplotlib.patches import Patch

            handles += [Line2D([], [], color="0.3", lw=1.2), Line2D([], [], color="0.3", lw=1.0, ls="--"),
                        Patch(color="0.3", alpha=0.18, lw=0)]
            labels += [r"fit $a - b\,x^{-c}$", "extrapolation", f"{int(level * 100)}% bootstrap band"]
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=6.5)  # never over the data
        caption = {
            "title": f"Data efficiency: {result.metric} vs {X_LABELS.get(result.x, result.x)}",
            "kind": "data_efficiency_curve",
            "fit": "y = a - b*x^(-c), bounded least squares; shaded: 95% bootstrap band; dashed: extrapolation",
            "trial_ids": {ac.arm: ac.trial_ids for ac in result.arms},
            "seeds": {ac.arm: ac.seeds for ac in result.arms},
            "summary": result.summary(),
        }
        return save_figure(fig, stem, caption)


def _plain_log_ticks(ax, xs: np.ndarray) -> None:
    """Label a log x-axis with the data's own values (1, 2, 4, 8 slides) when it spans few decades,
    instead of matplotlib's 2x10^0 style."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    xs = np.unique(xs[np.isfinite(xs) & (xs > 0)])
    if xs.size == 0 or xs.size > 12 or xs.max() / xs.min() > 1e4:
        return
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


__all__ = ["ArmCurve", "CurveResult", "HoldoutCheck", "PowerLawFit", "data_efficiency", "fit_power_law", "holdout_check",
           "plot_curve", "power_law", "resolve_x"]  # the fit is re-exported from pathfm.analysis.power_law
