"""``pathfm sweep run --dry-run``: the trial count, resources and cost of a sweep, from one measured CPU step of
its first trial (the hours: :mod:`pathfm.sweeps.cost`, shared with ``pathfm ablate run --dry-run``)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pathfm.io import read_jsonl
from pathfm.records import RunFolder
from pathfm.sweeps.cost import sweep_hours, trial_hours
from pathfm.sweeps.spec import SweepSpec, total_steps, validate_trial


def steps_per_trial(spec: SweepSpec, trials: list[dict], configs: list | None = None) -> int:
    """Training steps of a trial (the first trial's config, from ``configs`` when built already; an adaptive
    search's: the base config + budget)."""
    if configs:
        return total_steps(configs[0])
    if trials and trials[0].get("overrides"):
        return total_steps(validate_trial(spec, trials[0]))
    from pathfm.config import load_config

    cfg = load_config(spec.base, {**spec.overrides, **({"optim.steps": spec.budget.steps} if spec.budget.steps else {})})
    return total_steps(cfg)


def measure_step_time(spec: SweepSpec, trial: dict, steps: int = 2) -> dict[str, float]:
    """Run ``steps`` CPU training steps of ``trial`` in a temporary folder; returns the seconds of the
    first step (start-up included) and of a steady step."""
    from pathfm.eval.hook import probe_teacher
    from pathfm.ssl.trainer import train
    from pathfm.sweeps.trainable import trial_config

    cfg = trial_config(spec, trial)
    cfg.optim.steps = steps
    cfg.highres.enabled = False
    cfg.run.device = "cpu"
    cfg.run.log_every = 1
    cfg.run.checkpoint_every = 10**6
    cfg.data.num_workers = 0
    full_batch = cfg.data.batch_size * cfg.optim.grad_accum
    cfg.data.batch_size = min(cfg.data.batch_size, 4)  # a check of the pipeline, not a memory test
    cfg.optim.grad_accum = 1
    scale = full_batch / cfg.data.batch_size
    with tempfile.TemporaryDirectory(prefix="pathfm_dryrun_") as d:
        t0 = time.perf_counter()
        train(cfg, Path(d) / "run", probe=probe_teacher)
        wall = time.perf_counter() - t0
        recs = read_jsonl(RunFolder(Path(d) / "run").metrics)
    times = [r["time_s"] for r in recs]
    steady = (times[-1] - times[0]) / max(1, len(times) - 1) if len(times) > 1 else (times[0] if times else wall)
    return {"startup_s": wall - (times[-1] if times else 0.0), "step_s": steady * scale,
            "first_step_s": times[0] if times else wall, "measured_batch": cfg.data.batch_size, "scale": scale}


def preflight(spec: SweepSpec, trials: list[dict], *, step_time: float | None = None, out=None) -> dict:
    """Print the trial count, resources and estimated cost; run one CPU step of the first trial."""
    out = out if out is not None else sys.stdout
    algo = spec.search.algorithm
    n = len(trials)
    steps = steps_per_trial(spec, trials)
    r = spec.resources
    print(f"sweep '{spec.name}': {n} trial(s), {algo} search"
          + (f", ASHA (grace {spec.scheduler.grace_period} reports, x{spec.scheduler.reduction_factor})"
             if spec.scheduler.type == "asha" else ""), file=out)
    print(f"  base: {spec.base}; searched: {', '.join(spec.searched_params) or '-'}; "
          f"arms: {', '.join(a.name for a in spec.arms) if spec.arms else '-'}; seeds: {spec.seeds}", file=out)
    print(f"  every trial config is valid ({'validated at every bound' if algo == 'optuna' else 'all ' + str(n) + ' checked'})",
          file=out)
    print(f"  resources per trial: {r.cpu:g} CPU, {r.gpu:g} GPU x {r.workers} worker(s); "
          f"max concurrent: {spec.max_concurrent_trials or 'as many as fit'}", file=out)
    print(f"  steps per trial: {steps}; report every {spec.report_every}; objective {spec.objective.metric} "
          f"({spec.objective.mode})", file=out)
    if spec.eval.enabled:
        print(f"  evaluation: {', '.join(spec.eval.tasks)} with {', '.join(spec.eval.probes)} probe(s); baselines "
              + ("(random init, colour histogram) once for the sweep as reference rows" if spec.eval.reference else
                 "not evaluated once for the sweep (eval.reference: false)")
              + (", and again in every trial (eval.baselines: true)" if spec.eval.baselines else ""), file=out)
    first = trials[0] if trials and trials[0].get("overrides") else None
    if first is None:
        from pathfm.sweeps.spec import trial_from_sample

        lows = {k: d.extremes()[0] for k, d in spec.space.items()}
        first = trial_from_sample(spec, 0, lows)
    from pathfm.ssl.sharding import startup_checks
    from pathfm.sweeps.trainable import trial_config

    listed = [t for t in trials if t.get("overrides")] or [first]
    configs = [(trial_config(spec, t), f"trial {t.get('index', 0)}") for t in listed]
    for cfg, where in configs:  # what a start of the trial on its r.workers processes refuses, refused here
        startup_checks(cfg, int(r.workers), where=where)
    if r.gpu > 0:  # per-GPU memory of every listed trial, refused before any step when it cannot fit
        from pathfm.ssl.memory import memory_line

        lines = {memory_line(cfg, r.workers, where=where) for cfg, where in configs}
        print("  " + "\n  ".join(sorted(lines)), file=out)
    m = measure_step_time(spec, first)
    scaled = f" (measured at batch {m['measured_batch']}, x{m['scale']:g} for the full batch)" if m["scale"] != 1 else ""
    print(f"  one CPU step of trial 0: start-up {m['startup_s']:.1f}s, first step {m['first_step_s']:.2f}s, "
          f"steady step {m['step_s']:.2f}s{scaled}", file=out)
    per_step = step_time if step_time is not None else m["step_s"]
    device_hours = sweep_hours(trials, {None: trial_hours([(steps, per_step)])})
    if r.gpu > 0:
        gpu_hours = device_hours * r.gpu * r.workers
        src = "the given --step-time" if step_time is not None else "the CPU step time (an upper bound; pass --step-time measured on the GPU)"
        print(f"  estimated cost: {gpu_hours:.2f} GPU-hours ({n} x {steps} steps x {per_step:.2f}s, from {src})", file=out)
    else:
        gpu_hours = 0.0
        print(f"  estimated cost: {device_hours * r.cpu:.2f} CPU-core-hours, {device_hours:.2f} trial-hours "
              f"({n} x {steps} steps x {per_step:.2f}s), 0 GPU-hours", file=out)
    return {"n_trials": n, "steps": steps, "step_s": m["step_s"], "gpu_hours": gpu_hours, "trial_hours": device_hours}
