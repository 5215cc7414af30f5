"""``pathfm analyze table|curve|importance|report RESULTS ...`` and ``pathfm analyze health RUN ...`` (RESULTS: results.parquet/.csv files or
sweep folders). Imports nothing heavy at module level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pathfm.errors import PathfmError


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results.parquet / .csv files or sweep folders")
    g = p.add_argument_group("row selection ('all' disables a filter)")
    g.add_argument("--metric", default="balanced_accuracy",
                   help="metric name, or several comma-separated (one per task, e.g. balanced_accuracy,dice,pearson_r)")
    g.add_argument("--kind", default="eval")
    g.add_argument("--backbone", default="trained")
    g.add_argument("--probe", default="linear")
    g.add_argument("--step", choices=("final", "best", "last"), default="final",
                   help="which step per trial: the final one (default), the last logged, or the best (optimistic)")
    g.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    g.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="extra filter on any column or searched param (repeatable)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed of the bootstrap refits (curves, importance)")


def _selection(args):
    from pathfm.analysis.load import ANY, Selection

    def opt(v):
        return None if v in (None, ANY) else v

    filters = {}
    for w in args.where:
        if "=" not in w:
            raise PathfmError(f"--where '{w}': expected COL=VALUE, e.g. --where param.kde_weight=0.1")
        k, v = w.split("=", 1)
        filters[k.strip()] = v.strip()
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    return Selection(
        kind=opt(args.kind), backbone=opt(args.backbone), probe=opt(args.probe),
        metric=metrics[0] if len(metrics) == 1 else tuple(metrics), step=args.step,
        tasks=[t.strip() for t in args.tasks.split(",")] if args.tasks else None, filters=filters,
    )


def _emit(text: str, out: str | None) -> None:
    if out:
        from pathfm.io import atomic_write_text

        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _pair(text: str) -> tuple[str, str]:
    if ":" not in text:
        raise PathfmError(f"--compare '{text}': expected ARM:REFERENCE, e.g. --compare +kde:dinov2")
    arm, ref = text.rsplit(":", 1)
    return arm, ref


def _table(args) -> int:
    from pathfm.analysis.table import table_from_results

    table = table_from_results(
        args.results, _selection(args), baseline=args.baseline, arms=args.arm or None,
        level=args.level, sort=args.sort, normalise=args.normalise,
        ceiling=args.ceiling, digits=args.digits, lower_is_better=args.lower_is_better,
        compare=[_pair(c) for c in args.compare] or None, top=args.top,
    )
    fmt = args.format or {".tex": "latex", ".csv": "csv", ".html": "html"}.get(Path(args.out or "").suffix, "md")
    _emit(table.render(fmt), args.out)
    if args.plot:
        from pathfm.analysis.table_plot import plot_table

        files = plot_table(table, Path(args.plot))
        print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _curve(args) -> int:
    from pathfm.analysis.curve import data_efficiency, plot_curve

    from pathfm.analysis.load import read_analysis_hints

    hints = read_analysis_hints(args.results)
    res = data_efficiency(args.results, x=args.x or hints.get("x") or "param.n_slides", sel=_selection(args),
                          target=args.target, n_boot=args.fit_boot, level=args.level,
                          seed=args.seed, arms=args.arm or None, group_by=args.group_by or hints.get("group_by"))
    out = Path(args.out)
    files = plot_curve(res, out / "data_efficiency", size=args.size, level=args.level)
    sys.stdout.write(res.to_markdown())
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _importance(args) -> int:
    from pathfm.analysis.importance import importance_report
    from pathfm.analysis.load import read_analysis_hints

    against, optional = args.against, False
    if against is None:  # the study's hint (e.g. the HSV study plots against acceptance_rate), if logged
        against, optional = read_analysis_hints(args.results).get("plot_against"), True
    text, files = importance_report(args.results, _selection(args), Path(args.out), method=args.method,
                                    n_boot=args.imp_boot, seed=args.seed, against=against, size=args.size,
                                    against_optional=optional)
    sys.stdout.write(text)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _report(args) -> int:
    from pathfm.analysis.report import write_report

    paths = write_report(args.results, Path(args.out), _selection(args), baseline=args.baseline,
                         x=args.x, group_by=args.group_by, target=args.target, seed=args.seed,
                         fit_boot=args.fit_boot, imp_boot=args.imp_boot)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _power(args) -> int:
    from pathfm.analysis.table import power_from_results

    _emit(power_from_results(args.results, _selection(args), baseline=args.baseline, effect=args.effect,
                             alpha=args.alpha, power=args.power), args.out)
    return 0


def _health(args) -> int:
    from pathfm.analysis.health import plot_health

    files = plot_health(args.runs, Path(args.out), labels=args.label or None)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _checkpoints(args) -> int:
    from pathfm.eval.checkpoint_compare import compare_checkpoints, comparison_markdown

    table, notes = compare_checkpoints(args.run, args.task or ["crc"], probes=args.probe or ["linear"],
                                       seeds=args.seeds, k=args.average_last, device=args.device)
    _emit(comparison_markdown(table, notes), args.out)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="tables with CIs, data-efficiency curves, importance, reports",
                              description="Analyse sweep/ablation results (tidy results.parquet).")
    sub = p.add_subparsers(dest="analysis", metavar="WHAT")
    sub.required = True

    t = sub.add_parser("table", help="ablation table: arms x tasks with t intervals over seeds, Δ vs baseline (Holm)")
    _add_selection(t)
    t.add_argument("--baseline", default=None, help="baseline arm (default: baseline_arm of sweep_meta.json)")
    t.add_argument("--arm", action="append", default=[], help="an arm to show (repeatable; default: all)")
    t.add_argument("--format", choices=("md", "latex", "csv", "html"), default=None,
                   help="output format (default: from --out suffix, else Markdown)")
    t.add_argument("--out", default=None, help="write to this file instead of stdout")
    t.add_argument("--sort", choices=("average", "name", "none"), default=None,
                   help="row order (default: the study's table_order hint, else by Average, best first)")
    t.add_argument("--normalise", default=None, metavar="FLOOR",
                   help="rescale per task between a floor backbone (e.g. random_init) or number and --ceiling")
    t.add_argument("--ceiling", default="1.0", help="ceiling for --normalise: a number or a backbone name")
    t.add_argument("--digits", type=int, default=3)
    t.add_argument("--top", type=int, default=None, help="only the best N arms by Average (and the baseline)")
    t.add_argument("--lower-is-better", action="store_true", help="for losses/errors")
    t.add_argument("--compare", action="append", default=[], metavar="ARM:REF",
                   help="planned comparison (repeatable; default: the pairs in sweep_meta.json comparisons)")
    t.add_argument("--plot", default=None, metavar="STEM",
                   help="also draw the table: STEM.png/.pdf/.svg (+ STEM.json): Average with CI per arm, Δ vs baseline")
    t.set_defaults(func=_table)

    c = sub.add_parser("curve", help="data-efficiency curve with a saturating power-law fit")
    _add_selection(c)
    c.add_argument("--x", default=None,
                   help="param.n_slides (default, or the study's analysis hint), tiles_seen or gpu_hours")
    c.add_argument("--group-by", default=None, metavar="PARAM",
                   help="one curve per value of this param (default: per arm, or the study's hint)")
    c.add_argument("--target", type=float, default=None, help="score to reach: report the data size needed")
    c.add_argument("--arm", action="append", default=[], help="an arm to draw (repeatable; default: all)")
    c.add_argument("--fit-boot", type=int, default=200, help="bootstrap refits of the power law (default 200)")
    c.add_argument("--size", choices=("single", "double"), default="single")
    c.add_argument("--out", default="analysis", help="output folder (default ./analysis)")
    c.set_defaults(func=_curve)

    i = sub.add_parser("importance", help="importance of searched params with bootstrap error bars")
    _add_selection(i)
    i.add_argument("--method", choices=("fanova", "permutation"), default="fanova")
    i.add_argument("--imp-boot", type=int, default=20, help="bootstrap repetitions of the importance")
    i.add_argument("--against", default=None, metavar="TRAIN_METRIC",
                   help="also plot the score against this train metric (e.g. acceptance_rate for the HSV study)")
    i.add_argument("--size", choices=("single", "double"), default="double")
    i.add_argument("--out", default="analysis")
    i.set_defaults(func=_importance)

    pw = sub.add_parser("power", help="variance components of a pilot, the minimum detectable effect, seeds needed",
                        description="From a pilot's results: the variance components of the Average, the minimum "
                                    "detectable effect (80%% power, Holm over the table's comparisons) at several seed "
                                    "counts, and with --effect the seeds that effect needs.")
    _add_selection(pw)
    pw.add_argument("--baseline", default=None, help="baseline arm (default: baseline_arm of sweep_meta.json)")
    pw.add_argument("--effect", type=float, default=None, help="an effect on the Average: how many seeds it needs")
    pw.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (default 0.05)")
    pw.add_argument("--power", type=float, default=0.8, help="power to plan for (default 0.8)")
    pw.add_argument("--out", default=None, help="write to this file instead of stdout")
    pw.set_defaults(func=_power)

    h = sub.add_parser("health", help="training-health figure (teacher/student entropy vs ln K, spreads) of runs")
    h.add_argument("runs", nargs="+", help="training run directories (with metrics.jsonl)")
    h.add_argument("--label", action="append", default=[], help="legend label per run, in order (repeatable)")
    h.add_argument("--out", default="analysis/health", help="output stem (default analysis/health)")
    h.set_defaults(func=_health)

    r = sub.add_parser("report", help="one Markdown + HTML report with the tables and figures of a sweep")
    _add_selection(r)
    r.add_argument("--baseline", default=None)
    r.add_argument("--x", default=None, help="x of the data-efficiency curve (default: study hint, else param.n_slides)")
    r.add_argument("--group-by", default=None, metavar="PARAM")
    r.add_argument("--target", type=float, default=None)
    r.add_argument("--fit-boot", type=int, default=200, help="bootstrap refits of the power law")
    r.add_argument("--imp-boot", type=int, default=20, help="bootstrap repetitions of the importance")
    r.add_argument("--out", default="analysis/report")
    r.set_defaults(func=_report)

    ck = sub.add_parser("checkpoints", help="last vs average-of-last-K vs best-by-probe checkpoint of a run, "
                                            "evaluated side by side")
    ck.add_argument("run", help="training run / trial folder (with checkpoints/ and metrics.jsonl)")
    ck.add_argument("--task", action="append", default=[], help="final evaluation task (repeatable; default crc)")
    ck.add_argument("--probe", action="append", default=[], help="probe (repeatable; default linear)")
    ck.add_argument("--seeds", type=int, nargs="+", default=[0], help="fold / probe seeds (default: 0)")
    ck.add_argument("--average-last", type=int, default=3, metavar="K", help="checkpoints averaged (default 3)")
    ck.add_argument("--device", default="auto")
    ck.add_argument("--out", default=None, help="also write the Markdown table to this file")
    ck.set_defaults(func=_checkpoints)
