"""Which searched knobs matter: fANOVA importances (Hutter et al. 2014, via ``optuna.importance`` on a study
rebuilt from the result rows) or random-forest permutation importances (Breiman 2001), each with
bootstrap error bars over trials; marginal-effect plots (score vs knob with CI bands); and, for the HSV
tissue-filter study, the score against the measured tissue acceptance rate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import polars as pl

from pathfm.analysis.load import (ARM_NAME, ResultsError, Selection, param_columns, scan_results, train_metric,
                                  trial_values)
from pathfm.results import PARAM_PREFIX
from pathfm.analysis.stats import percentile_ci, t_interval

MAX_LEVELS = 12  # knobs with at most this many values are plotted per value, else in quantile bins


@dataclass
class Importance:
    """Importance of each param: point (on all trials), bootstrap CI, and the method used."""

    params: list[str]
    point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    method: str
    n_trials: int
    n_boot: int

    def to_markdown(self) -> str:
        lines = ["| Parameter | Importance | 95% CI |", "|---|---:|---|"]
        for i in np.argsort(-self.point):
            ci = "n/a" if not math.isfinite(self.lo[i]) else f"[{self.lo[i]:.3f}, {self.hi[i]:.3f}]"
            lines.append(f"| {self.params[i]} | {self.point[i]:.3f} | {ci} |")
        return "\n".join(lines) + (f"\n\n{self.method} importance over {self.n_trials} trials, "
                                   f"{self.n_boot} bootstrap resamples of trials.\n")


def searched_params(tv: pl.DataFrame) -> list[str]:
    """``param.*`` columns that vary across trials."""
    return [c for c in param_columns(tv.columns) if tv[c].drop_nulls().n_unique() > 1]


def _design(tv: pl.DataFrame, params: Sequence[str]) -> tuple[np.ndarray, list[bool], list[list]]:
    """Numeric design matrix (categoricals as codes) and which columns are categorical (+ their levels)."""
    cols, is_cat, levels = [], [], []
    for p in params:
        s = tv[p]
        if s.dtype.is_numeric():
            cols.append(s.cast(pl.Float64).to_numpy())
            is_cat.append(False)
            levels.append([])
        else:
            lv = sorted(str(v) for v in s.unique().to_list())
            cols.append(np.array([lv.index(str(v)) for v in s.to_list()], dtype=float))
            is_cat.append(True)
            levels.append(lv)
    return np.column_stack(cols), is_cat, levels


def _frozen_trials(X: np.ndarray, y: np.ndarray, names: list[str], is_cat: list[bool], levels: list[list]) -> list:
    """One ``optuna.trial.FrozenTrial`` per result trial (built once, reused by every bootstrap)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {}
    for j, n in enumerate(names):
        if is_cat[j]:
            dists[n] = CategoricalDistribution(levels[j])
        else:
            lo, hi = float(X[:, j].min()), float(X[:, j].max())
            if hi <= lo:
                hi = lo + 1e-12
            dists[n] = FloatDistribution(lo, hi, log=bool(lo > 0 and hi / lo >= 100))
    out = []
    for i in range(len(y)):
        params = {n: (levels[j][int(X[i, j])] if is_cat[j] else float(X[i, j])) for j, n in enumerate(names)}
        out.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(y[i])))
    return out


def _fanova(trials: list, names: list[str], seed: int, n_trees: int, max_depth: int) -> np.ndarray:
    """fANOVA importances (normalised) on a study rebuilt from ``trials``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    ev = optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(study, evaluator=ev, params=list(names), normalize=True)
    return np.array([imp.get(n, 0.0) for n in names])


def _permutation(X: np.ndarray, y: np.ndarray, seed: int, n_trees: int, max_depth: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    rf = RandomForestRegressor(n_estimators=n_trees, max_depth=max_depth, random_state=seed).fit(X, y)
    r = permutation_importance(rf, X, y, n_repeats=3, random_state=seed)
    v = np.clip(r.importances_mean, 0, None)
    return v / v.sum() if v.sum() > 0 else v


def param_importance(
    tv: pl.DataFrame,
    params: Sequence[str] | None = None,
    method: Literal["fanova", "permutation"] = "fanova",
    n_boot: int = 20,
    level: float = 0.95,
    seed: int = 0,
    n_trees: int = 16,
    max_depth: int = 8,
) -> Importance:
    """Normalised importances (sum 1) of ``params`` for the per-trial score ``tv['value']``; error bars
    from refitting on ``n_boot`` bootstrap resamples of the trials."""
    params = list(params) if params else searched_params(tv)
    if not params:
        raise ResultsError("no searched parameter varies across trials (no param.* column with >1 value)")
    d = tv.drop_nulls(subset=params + ["value"])
    if d.height < 4:
        raise ResultsError(f"importance needs >= 4 complete trials, got {d.height}")
    X, is_cat, levels = _design(d, params)
    y = d["value"].to_numpy()
    names = [p[len(PARAM_PREFIX):] if p.startswith(PARAM_PREFIX) else p for p in params]

    frozen = _frozen_trials(X, y, names, is_cat, levels) if method == "fanova" else []

    def run(idx, s):
        if method == "fanova":
            return _fanova([frozen[i] for i in idx], names, s, n_trees, max_depth)
        return _permutation(X[idx], y[idx], s, n_trees, max_depth)

    point = run(np.arange(len(y)), seed)
    rng = np.random.default_rng(seed)
    boots = []
    for b in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if np.ptp(y[idx]) == 0:
            continue
        boots.append(run(idx, seed + b + 1))
    lo = hi = np.full(len(params), np.nan)
    if len(boots) >= 2:
        lo, hi = percentile_ci(np.array(boots), level, axis=0)
    return Importance(names, point, lo, hi, method, int(d.height), len(boots))


def marginal_effect(tv: pl.DataFrame, param: str, level: float = 0.95, seed: int = 0, n_bins: int = 8) -> pl.DataFrame:
    """Mean score (with bootstrap CI over trials) per value of ``param``, or per quantile bin when it
    takes more than MAX_LEVELS values: columns ``x, label, mean, ci_low, ci_high, n``."""
    d = tv.drop_nulls(subset=[param, "value"])
    s = d[param]
    numeric = s.dtype.is_numeric()
    if not numeric or s.n_unique() <= MAX_LEVELS:
        keys = d.with_columns(pl.col(param).alias("_k"))
    else:
        qs = np.unique(np.quantile(s.cast(pl.Float64).to_numpy(), np.linspace(0, 1, n_bins + 1)))
        codes = np.clip(np.searchsorted(qs, s.cast(pl.Float64).to_numpy(), side="right") - 1, 0, len(qs) - 2)
        keys = d.with_columns(pl.Series("_k", codes))
    rows = []
    for k, g in keys.group_by("_k", maintain_order=True):
        m, lo, hi, _ = (float(v) for v in t_interval(g["value"].to_numpy(), level))  # few trials per value: t, not bootstrap
        xv = g[param]
        x = float(xv.cast(pl.Float64).median()) if numeric else math.nan
        label = str(xv[0]) if (not numeric or s.n_unique() <= MAX_LEVELS) else f"{xv.min():.3g}-{xv.max():.3g}"
        rows.append({"x": x, "label": label, "mean": m, "ci_low": lo, "ci_high": hi, "n": g.height})
    out = pl.DataFrame(rows)
    return out.sort("x") if numeric else out.sort("label")


def plot_importance(imp: Importance, tv: pl.DataFrame, params: Sequence[str], stem: Path,
                    size: Literal["single", "double"] = "double", metric: str = "score") -> list[Path]:
    """Bar chart of importances with bootstrap error bars, and one marginal-effect panel per knob."""
    from pathfm.analysis.figures import color, new_figure, save_figure, style

    order = list(np.argsort(-imp.point))
    names = [p[len(PARAM_PREFIX):] if p.startswith(PARAM_PREFIX) else p for p in params]
    params = [params[names.index(imp.params[i])] for i in order if imp.params[i] in names]  # most important first
    n = 1 + len(params)
    ncols = min(n, 4 if size == "double" else 2)
    if size == "double" and n in (5, 6):
        ncols = 3
    nrows = math.ceil(n / ncols)
    with style():
        fig, axes = new_figure(size, aspect=0.32 * nrows * (4 / ncols if size == "double" else 1.0), ncols=ncols, nrows=nrows)
        axs = axes.ravel()
        ax = axs[0]
        ypos = np.arange(len(order))[::-1]
        pt = imp.point[order]
        err = np.vstack([np.where(np.isfinite(imp.lo[order]), pt - imp.lo[order], 0),
                         np.where(np.isfinite(imp.hi[order]), imp.hi[order] - pt, 0)])
        ax.barh(ypos, pt, xerr=np.clip(err, 0, None), color=color(0), capsize=2, height=0.6)
        ax.set_yticks(ypos, [imp.params[i] for i in order])
        ax.set_xlabel(f"{imp.method} importance")
        ax.set_xlim(0, max(1.0, float(np.nanmax(imp.hi)) if np.isfinite(imp.hi).any() else 1.0))
        ax.set_title("importance (95% bootstrap CI)")
        for k, p in enumerate(params, start=1):
            ax = axs[k]
            me = marginal_effect(tv, p)
            name = p[len(PARAM_PREFIX):] if p.startswith(PARAM_PREFIX) else p
            has = np.isfinite(me["ci_low"].to_numpy())
            few_levels = me.height <= 3  # on/off switches and 3-level knobs: points, not a line
            if np.isfinite(me["x"].to_numpy()).all() and not few_levels:
                x = me["x"].to_numpy()
                ax.plot(x, me["mean"], "-o", color=color(k), ms=3)
                ax.fill_between(x, np.where(has, me["ci_low"], me["mean"]), np.where(has, me["ci_high"], me["mean"]),
                                color=color(k), alpha=0.2, lw=0)
                if x.min() > 0 and x.max() / x.min() >= 100:
                    ax.set_xscale("log")
            else:
                x = np.arange(me.height)
                m = me["mean"].to_numpy()
                yerr = np.vstack([np.where(has, m - me["ci_low"].to_numpy(), 0), np.where(has, me["ci_high"].to_numpy() - m, 0)])
                ax.errorbar(x, m, yerr=yerr, fmt="o", color=color(k), capsize=2)
                labels = me["label"].to_list()
                long = max(len(lb) for lb in labels) > 4
                ax.set_xticks(x, labels, rotation=30 if long else 0, ha="right" if long else "center")
                ax.set_xlim(-0.5, len(x) - 0.5)
            ax.set_xlabel(name)
            ax.set_ylabel(metric.replace("_", " "))
        for ax in axs[n:]:
            ax.set_visible(False)
        caption = {
            "title": f"Parameter importance and marginal effects ({imp.method})",
            "kind": "importance",
            "importance": {imp.params[i]: [float(imp.point[i]), float(imp.lo[i]), float(imp.hi[i])] for i in range(len(imp.params))},
            "n_trials": imp.n_trials, "n_boot": imp.n_boot,
            "trial_ids": sorted(tv["trial_id"].to_list()),
            "seeds": sorted({str(s) for s in tv["replicate"].to_list()}),
        }
        return save_figure(fig, stem, caption)


def plot_against(tv: pl.DataFrame, train: pl.DataFrame, column: str, stem: Path,
                 size: Literal["single", "double"] = "single", metric: str = "score", seed: int = 0) -> tuple[list[Path], dict]:
    """Score vs a measured train metric (e.g. the HSV filter's tissue ``acceptance_rate``), one colour per
    arm, a least-squares line with a bootstrap band and Pearson r with its bootstrap CI."""
    from pathfm.analysis.figures import MARKERS, color, new_figure, save_figure, style

    d = tv.join(train, on="trial_id", how="inner").drop_nulls(subset=[column, "value"]).sort("trial_id")  # reproducible
    if d.height < 3:
        raise ResultsError(f"need >= 3 trials with both a score and a train '{column}', got {d.height}")
    x, y = d[column].to_numpy(), d["value"].to_numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (1000, len(x)))
    xb, yb = x[idx], y[idx]
    xm, ym = xb.mean(1, keepdims=True), yb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = ((xb - xm) * (yb - ym)).sum(1) / ((xb - xm) ** 2).sum(1)
        r_b = ((xb - xm) * (yb - ym)).sum(1) / np.sqrt(((xb - xm) ** 2).sum(1) * ((yb - ym) ** 2).sum(1))
    icpt = ym[:, 0] - slope * xm[:, 0]
    r = float(np.corrcoef(x, y)[0, 1]) if np.ptp(x) > 0 and np.ptp(y) > 0 else math.nan
    r_lo, r_hi = percentile_ci(r_b[np.isfinite(r_b)], 0.95) if np.isfinite(r_b).sum() > 2 else (math.nan, math.nan)
    stats = {"pearson_r": r, "r_ci": [float(r_lo), float(r_hi)], "n_trials": int(d.height)}
    with style():
        fig, axes = new_figure(size, aspect=0.75)
        ax = axes[0, 0]
        # colour by the ablation arm (not by its label: searched params split that further)
        for i, (arm, g) in enumerate(d.group_by(ARM_NAME, maintain_order=True)):
            ax.scatter(g[column], g["value"], s=14, color=color(i), marker=MARKERS[i % len(MARKERS)], label=str(arm[0]),
                       edgecolors="0.15", linewidths=0.3, zorder=3)
        gx = np.linspace(x.min(), x.max(), 100)
        ok = np.isfinite(slope)
        if ok.sum() > 2:
            lines = icpt[ok, None] + slope[ok, None] * gx[None]
            lo, hi = percentile_ci(lines, 0.95, axis=0)
            p = np.polyfit(x, y, 1)
            ax.plot(gx, np.polyval(p, gx), color="0.2", lw=1.0)
            ax.fill_between(gx, lo, hi, color="0.5", alpha=0.2, lw=0)
        ax.set_xlabel(column.replace("_", " ") + " (measured, train)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(f"Pearson r = {r:.2f} [{r_lo:.2f}, {r_hi:.2f}]", fontsize=7)
        n_groups = d[ARM_NAME].n_unique()
        if n_groups <= 4:
            ax.legend(fontsize=6)
        elif n_groups <= 16:  # many arms: legend beside the axes, never over the points
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 + n_groups // 9)
        caption = {"title": f"{metric} vs {column}", "kind": "score_vs_train_metric", **stats,
                   "trial_ids": sorted(d["trial_id"].to_list()),
                   "seeds": sorted({str(s) for s in d["replicate"].to_list()})}
        return save_figure(fig, stem, caption), stats


def importance_report(results, sel: Selection | None, out: Path, method: Literal["fanova", "permutation"] = "fanova",
                      n_boot: int = 20, seed: int = 0, against: str | None = None,
                      size: Literal["single", "double"] = "double",
                      against_optional: bool = False) -> tuple[str, list[Path]]:
    """Importance table (Markdown) + figures in ``out``; with ``against``, also the score-vs-train-metric
    plot (skipped instead of failing when ``against_optional`` and the trials did not log it)."""
    sel = sel or Selection()
    lf = results.lazy() if isinstance(results, pl.DataFrame) else scan_results(results)
    tv = trial_values(lf, sel)
    params = searched_params(tv)
    metric = ",".join(sel.metrics)
    files: list[Path] = []
    text = ""
    if params:
        imp = param_importance(tv, params, method=method, n_boot=n_boot, seed=seed)
        files += plot_importance(imp, tv, params, out / "importance", size=size, metric=metric)
        text += imp.to_markdown()
    elif against is None or against_optional:
        raise ResultsError("no searched parameter varies across trials; nothing to rank (use --against for a train metric)")
    if against:
        try:
            train = train_metric(lf, against)
        except ResultsError:
            if not against_optional:
                raise
            return text, files
        f, st = plot_against(tv, train, against, out / f"score_vs_{against}", metric=metric, seed=seed)
        files += f
        text += (f"\n{metric} vs {against}: Pearson r = {st['pearson_r']:.3f} "
                 f"[{st['r_ci'][0]:.3f}, {st['r_ci'][1]:.3f}] over {st['n_trials']} trials.\n")
    return text, files
