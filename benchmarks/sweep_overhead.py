"""Harness overhead of ``pathfm sweep run`` against plain training runs of the same trials.

Measures, on the smoke preset (pico ViT, bundled slides, no end-of-trial evaluation so only the harness
differs):

* time from a trial's start to its first training step: inside a Ray trial (``first_step_latency_s``,
  from the trainable's start) vs. a fresh ``python -c "train(...)"`` process (from process start);
* the sweep's wall time (``run_sweep``: Ray start-up, scheduling, reporting, checkpoints, collection,
  shutdown) vs. the same trials run one after another as plain processes, and vs. the sum of the
  trials' own wall and pure training times.

    .venv/bin/python benchmarks/sweep_overhead.py [--steps 100] [--trials 2]

Trials run one at a time with all CPUs (``resources.cpu`` = CPUs, ``max_concurrent_trials: 1``), so the
comparison is like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

OVERRIDES = {"data.assume_mpp": 0.5, "run.checkpoint_every": 25, "run.log_every": 1}


def plain_run(overrides: dict, run_dir: Path, threads: int) -> dict:
    """One training run in a fresh process (the baseline a bash loop gives)."""
    code = (
        "import time, json, sys; t0 = time.time()\n"
        "from pathfm.config import load_config\nfrom pathfm.ssl.trainer import train\n"
        f"cfg = load_config('smoke', {overrides!r}); cfg.run.progress = False; cfg.run.threads = {threads}\n"
        "first = []\n"
        "class CB:\n    def on_log(self, r):\n        first.append(time.time()) if not first else None\n"
        f"train(cfg, {str(run_dir)!r}, callbacks=[CB()])\n"
        "print(json.dumps({'first_step_s': first[0] - t0}))\n"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.time() - t0
    info = json.loads(out.stdout.strip().splitlines()[-1])
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"wall_s": wall, "first_step_s": info["first_step_s"], "train_s": recs[-1]["time_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()
    cpus = os.cpu_count() or 2
    from pathfm.records import SweepFolder, read_trial
    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    kdes = [round(0.01 * i, 3) for i in range(args.trials)]
    overrides = dict(OVERRIDES, **{"optim.steps": args.steps})
    with tempfile.TemporaryDirectory(prefix="pathfm_bench_") as tmp:
        tmp = Path(tmp)
        spec = spec_from_dict({
            "name": "overhead", "overrides": overrides, "space": {"kde_weight": {"grid": kdes}},
            "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 5,
            "resources": {"cpu": cpus}, "max_concurrent_trials": 1,
        })
        t0 = time.time()
        sweep_dir = run_sweep(spec, storage=tmp / "sweeps", num_cpus=cpus, verbose=0)
        sweep_wall = time.time() - t0
        trials = [read_trial(d) for d in SweepFolder(sweep_dir).trial_dirs()]
        base = [plain_run(dict(overrides, **{"loss.kde_weight": k}), tmp / f"plain_{i}", cpus) for i, k in enumerate(kdes)]

    def mean(xs):
        return sum(xs) / len(xs)

    ours_first = mean([t["first_step_latency_s"] for t in trials])
    base_first = mean([b["first_step_s"] for b in base])
    trial_wall = sum(t["wall_time_s"] for t in trials)
    trial_train = sum(t["train_time_s"] for t in trials)
    base_wall = sum(b["wall_s"] for b in base)
    rows = [
        ("trial start -> first step (s, mean)", ours_first, base_first),
        ("wall time of all trials (s)", sweep_wall, base_wall),
        ("sum of trial wall times (s)", trial_wall, base_wall),
        ("sum of pure training times (s)", trial_train, sum(b["train_s"] for b in base)),
    ]
    print(f"machine: {os.cpu_count()}-core {os.uname().machine}; {args.trials} trials x {args.steps} steps of the smoke "
          f"preset, one at a time with {cpus} CPUs\n")
    print(f"{'measure':<40} {'pathfm sweep':>13} {'plain runs':>11} {'ratio':>7}")
    for name, ours, basev in rows:
        print(f"{name:<40} {ours:>13.1f} {basev:>11.1f} {ours / basev:>7.2f}")
    print(f"\nsweep overhead vs plain runs: {100 * (sweep_wall / base_wall - 1):+.1f}% "
          f"(sweep wall {sweep_wall:.1f}s; per trial {sweep_wall / args.trials:.1f}s; Ray start/stop and collection "
          f"{sweep_wall - trial_wall:.1f}s in total)")


if __name__ == "__main__":
    main()
