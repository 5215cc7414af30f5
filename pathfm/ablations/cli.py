"""``pathfm ablate list | show NAME | run NAME|PATH --scale smoke|small|paper [--seeds N] [--dry-run]``.

Imports nothing heavy at module level (Ray and torch load only when a study runs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="named ablation studies (component, kde, hsv, hed, data, highres, interactions)",
        description="Named, versioned ablation studies of the Midnight recipe, expanded into sweeps.",
    )
    sub = p.add_subparsers(dest="ablate_cmd", metavar="COMMAND")
    sub.required = True

    ls = sub.add_parser("list", help="the named studies, one line each")
    ls.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="a study's arms, baseline and comparisons at a scale")
    show.add_argument("study", help="a named study or a path to a study YAML")
    show.add_argument("--scale", default="smoke", help="smoke | small | paper | paper-vitg (default smoke)")
    show.add_argument("--yaml", action="store_true", help="print the study file itself (to copy and edit)")
    show.set_defaults(func=cmd_show)

    run = sub.add_parser("run", help="run a study as a sweep (or --dry-run: arms, trial count, GPU-hours)")
    run.add_argument("study", help="a named study or a path to a study YAML")
    run.add_argument("--scale", default="smoke", help="smoke | small | paper | paper-vitg (default smoke)")
    run.add_argument("--seeds", type=int, default=None, help="number of replicate seeds (0..N-1); default per scale")
    run.add_argument("--dry-run", action="store_true", help="print the plan and the cost estimate; run nothing")
    run.add_argument("--pilot", default=None, metavar="RESULTS",
                     help="a pilot's results (results.parquet / .csv / sweep folder): print what this plan's seeds can "
                          "detect, from the pilot's variance components")
    run.add_argument("--effect", type=float, default=None,
                     help="with --pilot: the effect on the Average to plan for (how many seeds it needs)")
    run.add_argument("--storage", default="runs/sweeps", help="folder or URI for the sweep (default runs/sweeps)")
    run.add_argument("--address", default=None, help="Ray cluster: 'auto', 'ray://host:10001'; default: local Ray")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    run.add_argument("--arms", default=None, help="comma-separated subset of arms to run (names or aliases)")
    run.add_argument("--max-slides", type=int, default=None, help="data ladder: use this many slides as 'all'")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="config override applied to every arm (repeatable), e.g. --set data.slides=slides.csv")
    run.add_argument("--name", default=None, help="sweep folder name (default <study>-v<version>-<scale>)")
    run.set_defaults(func=cmd_run)

    col = sub.add_parser("collect", help="rebuild a study sweep's results.parquet (after `pathfm sweep resume`)")
    col.add_argument("sweep_dir", help="the sweep folder `pathfm ablate run` printed")
    col.set_defaults(func=cmd_collect)


# ------------------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    from pathfm.ablations.study import bundled_studies, load_study
    from pathfm.errors import PathfmError

    rows = []
    for name, path in bundled_studies().items():
        try:
            s = load_study(path)
            rows.append((name, f"v{s.version}", s.description))
        except PathfmError as e:  # one broken file must not hide the others
            rows.append((name, "?", f"(invalid: {str(e).splitlines()[0]})"))
    width = max(len(r[0]) for r in rows) if rows else 10
    for name, version, desc in rows:
        print(f"{name:<{width}}  {version:<3}  {desc}")
    print("\npathfm ablate show NAME   |   pathfm ablate run NAME --scale smoke [--dry-run]")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pathfm.ablations.expand import expand_study
    from pathfm.ablations.study import find_study, load_study

    if args.yaml:
        sys.stdout.write(find_study(args.study).read_text())
        return 0
    study = load_study(args.study)
    plan = expand_study(study, args.scale)
    print(format_plan(plan))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pathfm.ablations.expand import expand_study
    from pathfm.ablations.study import load_study
    from pathfm.config import parse_overrides

    study = load_study(args.study)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    plan = expand_study(
        study,
        args.scale,
        seeds=args.seeds,
        overrides=parse_overrides(args.overrides),
        only_arms=arms,
        max_slides=args.max_slides,
    )
    print(format_plan(plan, costs=True))
    if args.pilot:
        print("\n" + _pilot_power(args.pilot, plan, args.effect))
    if args.dry_run:
        _validate_trials(plan)
        print("\n(dry run: nothing was started)")
        return 0
    from pathfm.ablations.run import run_plan
    from pathfm.records import SweepFolder

    sweep_dir = run_plan(plan, storage=args.storage, address=args.address, num_cpus=args.num_cpus, name=args.name)
    print(f"\nresults: {SweepFolder(sweep_dir).results}")
    print(f"next:    pathfm analyze report {sweep_dir}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pathfm.ablations.run import collect_study

    out = collect_study(Path(args.sweep_dir).expanduser().resolve())
    print(f"results: {out}")
    return 0


def _pilot_power(pilot: str, plan: Any, effect: float | None) -> str:
    """What the plan's seeds can detect with the pilot's noise (Holm over the plan's comparisons with its
    baseline), and the seeds ``effect`` needs."""
    from pathfm.analysis.power import min_detectable_effect, power_report
    from pathfm.analysis.table import table_from_results

    table = table_from_results(pilot)
    m = max(len(plan.arms) - 1, 1)
    n = len(plan.spec.seeds)
    mde = min_detectable_effect(table.variance.diff_sd, n, 0.05 / m)
    return (f"Power from the pilot {pilot} ({len(table.arms)} arms):\n" + power_report(table.variance, m, effect=effect)
            + f"\nThis plan: {n} seeds per arm, {m} comparisons with the baseline -> minimum detectable effect on the "
              f"Average {mde:.3f} (80% power).")


def _validate_trials(plan: Any) -> None:
    """Let the sweeps part validate every trial too (cheap: configs only), and run every arm's start-up checks
    (pathfm.ssl.sharding.startup_checks) at the scale's workers per trial."""
    from pathfm.ssl.sharding import startup_checks
    from pathfm.sweeps.spec import expand_trials

    trials = expand_trials(plan.to_sweep_spec())
    workers = int(plan.resources.get("workers", 1) or 1)
    device = "cuda" if plan.resources.get("gpu", 0) > 0 else "cpu"  # as pathfm.sweeps.trainable.trial_config
    for a in plan.arms:
        cfg = plan.arm_config(a.name)
        startup_checks(cfg, workers, device if cfg.run.device != "cpu" else "cpu", where=f"arm {a.name}")
    print(f"validated {len(trials)} trial configs; start-up checks passed for {len(plan.arms)} arm(s) at {workers} "
          "process(es) per trial")


# ----------------------------------------------------------------------------------- formatting
def _short(overrides: dict[str, Any]) -> str:
    from pathfm.ablations.expand import alias_of

    return ", ".join(f"{alias_of(k)}={v}" for k, v in overrides.items())


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def _trial_count(plan: Any) -> str:
    """``8 arms x 2 seeds = 16``, or how a search space changes that count (the sweep's own expansion)."""
    n = plan.n_trials
    base = f"{len(plan.arms)} arms x {len(plan.seeds)} seeds"
    search = dict(plan.search or {})
    algorithm = search.get("algorithm", "grid")
    if algorithm == "optuna":
        return f"{n} (optuna: trials that choose among {base} and the search space)"
    if n == len(plan.arms) * len(plan.seeds):
        return f"{base} = {n}"
    return f"{base} x {n // (len(plan.arms) * len(plan.seeds))} ({algorithm} search) = {n}"


def format_plan(plan: Any, costs: bool = False) -> str:
    from pathfm.ablations.scales import get_scale

    scale = get_scale(plan.scale)
    lines = [
        f"study {plan.study} v{plan.version} at scale {plan.scale}: {plan.description}",
        f"  source:   {plan.source}",
        f"  base:     {plan.base} + {len(plan.overrides)} scale/study overrides",
        f"  baseline: {plan.baseline_arm}",
        f"  seeds:    {plan.seeds}",
        f"  trials:   {_trial_count(plan)}",
        "",
    ]
    cost_by_arm = {}
    unit = "GPU-h" if scale.device == "gpu" else "CPU-h"
    if costs:
        from pathfm.ablations.estimate import plan_costs, total_hours

        cl = plan_costs(plan)
        cost_by_arm = {c.arm: c for c in cl}
    name_w = max(len(a.name) for a in plan.arms)
    alias_w = max([len(", ".join(a.aliases)) for a in plan.arms] + [len("also")])
    header = f"  {'arm':<{name_w}}  {'also':<{alias_w}}"
    if costs:
        header += f"  {'steps':>13}  {unit + '/trial':>11}"
    lines.append(header + "  overrides")
    for a in plan.arms:
        row = f"  {a.name:<{name_w}}  {', '.join(a.aliases):<{alias_w}}"
        if costs:
            c = cost_by_arm[a.name]
            steps = f"{c.main_steps}" + (f"+{c.highres_steps}hr" if c.highres_steps else "")
            row += f"  {steps:>13}  {_hours(c.hours_per_trial):>11}"
        offset = f"seed + {a.seed_offset}" if getattr(a, "seed_offset", 0) else ""
        lines.append(row + "  " + ", ".join(x for x in (_short(a.overrides), offset) if x))
    if plan.comparisons:
        lines.append("")
        lines.append("  comparisons: " + "; ".join(f"{a} vs {b}" for a, b in plan.comparisons))
    for d in plan.designs:
        lines.append(f"  design: {d['description']}")
        if d["aliases"]:
            keys = list(d["aliases"])  # main effects, then 2-factor interactions, in factor order
            rank = {e: i for i, e in enumerate(keys)}
            groups = {tuple(sorted({k, *v}, key=lambda e: rank.get(e, len(rank)))) for k, v in d["aliases"].items()}
            pairs = [" = ".join(g) for g in sorted(groups, key=lambda g: rank.get(g[0], len(rank)))]
            lines.append(f"  aliased (up to 2-factor interactions): {'; '.join(pairs)}")
    if plan.eval_resolutions:
        lines.append(f"  evaluated at: {', '.join(plan.eval_resolutions)} resolution")
    if costs:
        total = total_hours(plan, cl)
        srcs = sorted({c.source for c in cl})
        lines.append("")
        lines.append(
            f"  estimated {unit}: {_hours(total)} for {plan.n_trials} trials "
            f"({' / '.join(srcs)}; step-time table: pathfm/ablations/scales.yaml, workers per trial: "
            f"{int(plan.resources.get('workers', 1))})"
        )
        from pathfm.ablations.estimate import concurrency, wall_hours

        wall = wall_hours(plan, cl)
        if wall is not None:
            lines.append(f"  estimated wall time: {wall * 60:.1f} min with {concurrency(plan)} trials at once "
                         "on this machine")
        if scale.device == "gpu":
            from pathfm.ssl.memory import memory_line, training_memory

            workers = int(plan.resources.get("workers", 1) or 1)
            stages = [(c, a.name + (" high-res" if c is not cfg else "")) for a in plan.arms
                      for cfg in [plan.arm_config(a.name)]
                      for c in [cfg] + ([cfg.highres_stage()] if cfg.highres.enabled else [])]
            # every stage of every arm is checked against its GPU (a ConfigError names the fixes); the largest printed
            shown = [(memory_line(c, workers, f"arm {name}", "highres.batch_size" if name.endswith(" high-res")
                                  else "data.batch_size"), c, name) for c, name in stages]
            line, _, where = max(shown, key=lambda e: training_memory(e[1], workers)[0].total)
            lines.append(f"  estimated {line} (largest: {where}); an estimate, see pathfm/ssl/memory.py")
    return "\n".join(lines)
