"""Analysis of sweep and ablation results (the tidy schema of docs/architecture.md).

    from pathfm.analysis import Selection, fold_scores, table_from_results, data_efficiency, plot_curve
    table = table_from_results("sweeps/kde", Selection(probe="linear"), baseline="baseline")
    print(table.to_markdown())

Submodules: ``load`` (polars reading/selection/normalisation), ``stats`` (bootstrap CIs, paired
differences, IQM), ``table`` (ablation tables: Markdown/LaTeX/CSV/HTML), ``curve`` (data-efficiency power
law), ``importance`` (fANOVA / permutation importance, marginal effects), ``figures`` (style, saving with
caption metadata), ``report`` (Markdown + HTML report). Heavy imports happen inside the functions.
"""

__all__ = [
    "Selection", "fold_scores", "normalise", "scan_results", "trial_scores", "trial_values",
    "table_from_results", "build_table", "data_efficiency", "plot_curve", "param_importance", "write_report",
]


def __getattr__(name: str):  # lazy: `pathfm --help` must not import polars/matplotlib
    if name in ("Selection", "fold_scores", "normalise", "scan_results", "trial_scores", "trial_values"):
        from pathfm.analysis import load

        return getattr(load, name)
    if name in ("table_from_results", "build_table"):
        from pathfm.analysis import table

        return getattr(table, name)
    if name in ("data_efficiency", "plot_curve", "fit_power_law"):
        from pathfm.analysis import curve

        return getattr(curve, name)
    if name in ("param_importance",):
        from pathfm.analysis import importance

        return importance.param_importance
    if name == "write_report":
        from pathfm.analysis.report import write_report

        return write_report
    raise AttributeError(name)
