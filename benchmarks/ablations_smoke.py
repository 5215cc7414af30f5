"""Benchmark: the `component` study at smoke scale on local Ray, measured against the --dry-run estimate.

    .venv/bin/python benchmarks/ablations_smoke.py [--seeds 2] [--num-cpus 2]

Prints one table: the dry-run estimate (wall minutes at the scale's concurrency, CPU-hours) next to the
measured values of a real run in the same process, and their ratio. The measured per-trial training time
(`train_time_s` of each trial.json) is shown beside the per-trial wall time so the fixed cost per trial
(Ray worker start-up, slide opening, evaluation) is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()

    from pathfm.ablations.estimate import plan_costs, total_hours, wall_hours
    from pathfm.ablations.expand import plan_for
    from pathfm.ablations.run import run_plan

    plan = plan_for("component", "smoke", seeds=args.seeds)
    costs = plan_costs(plan)
    est_cpu_h, est_wall_h = total_hours(plan, costs), wall_hours(plan, costs)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sweep_dir = run_plan(plan, Path(tmp), num_cpus=args.num_cpus, verbose=0)
        wall = time.perf_counter() - t0
        trials = [json.loads(p.read_text()) for p in Path(sweep_dir).glob("*/trial.json")]
    train = sum(float(t.get("train_time_s") or 0) for t in trials)
    trial_wall = sum(float(t.get("wall_time_s") or 0) for t in trials)
    ok = sum(t.get("status") == "TERMINATED" for t in trials)
    rows = [
        ("wall time, min", est_wall_h * 60, wall / 60),
        ("trial CPU time, h (sum of trial wall)", est_cpu_h, trial_wall / 3600),
        ("training time, h (sum of train_time_s)", sum(c.main_steps * c.s_per_step_main + c.highres_steps * (c.s_per_step_highres or 0)
                                                       for c in costs) * len(plan.seeds) / 3600, train / 3600),
    ]
    print(f"component study, smoke scale, {len(plan.arms)} arms x {len(plan.seeds)} seeds = {plan.n_trials} trials "
          f"({ok} TERMINATED), local Ray with {args.num_cpus} CPUs")
    print(f"{'quantity':<42} {'estimate':>10} {'measured':>10} {'measured/estimate':>18}")
    for name, est, meas in rows:
        print(f"{name:<42} {est:>10.4g} {meas:>10.4g} {meas / est if est else float('nan'):>18.2f}")


if __name__ == "__main__":
    main()
