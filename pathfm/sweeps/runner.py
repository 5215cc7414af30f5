"""Launch, resume and inspect sweeps on local Ray or an existing Ray cluster.

``run_sweep(spec)`` validates every trial, connects to Ray (embedded local Ray by default,
``address="auto"`` or ``"ray://head:10001"`` for a cluster), checks that the cluster can ever run a
trial (a GPU request on a CPU-only cluster fails here with a clear message instead of pending
forever), writes ``sweep_spec.yaml``, ``sweep_meta.json`` and ``trials.json`` into the sweep folder
``<storage>/<name>``, runs the Tuner (Ray's progress table plus one summary line per finished
trial) and finally rebuilds ``results.parquet``. ``resume_sweep(dir)`` restores the experiment
(``Tuner.restore``): finished trials are kept, unfinished ones continue from their checkpoints.
Beside the trials, one Ray task evaluates the sweep's reference rows (the random-init and colour-histogram
baselines, once per sweep: :mod:`pathfm.sweeps.reference`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError
from pathfm.io import atomic_write_json, atomic_write_text, ensure_writable_dir, read_jsonl, redact_url
from pathfm.results import META_FILE, read_sweep_meta
from pathfm.sweeps.collect import collect, read_trial, trial_dirs
from pathfm.sweeps.cost import concurrent_trials, sweep_hours, trial_hours
from pathfm.sweeps.reference import finish_reference, start_reference
from pathfm.sweeps.spec import SweepSpec, expand_trials, load_spec, spec_from_dict, total_steps, validate_trial
from pathfm.tracking import prepare_tracking

SPEC_FILE = "sweep_spec.yaml"
TRIALS_FILE = "trials.json"


class SweepError(PathfmError):
    """A sweep that cannot start or resume (names the folder/field and the fix)."""


# ------------------------------------------------------------------------------------- Ray setup
def _default_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:  # our own embedded cluster: no token needed (Ray >= 2.59 turns token auth on by default)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # intermediate reports carry in-training metrics only; the objective comes with the last report
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")


# Ray Client's proxy starts one server process per client session; on a fresh head that start sometimes fails
# at once with "Starting Ray client server failed" while the next connection succeeds (measured: the first of
# four connections failed, the other three worked, against one head). A few attempts make `ray://` usable.
CLIENT_SERVER_ATTEMPTS = 3


def client_server_failed_to_start(address: str, message: str) -> bool:
    """True for the Ray Client error that a new connection attempt can cure (only for ``ray://`` addresses)."""
    return address.startswith("ray://") and "Starting Ray client server failed" in message


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            verbose: int = 1) -> bool:
    """Connect to Ray; returns True if this call started the connection (and should shut it down).

    ``address=None``: reuse an initialised Ray, else start an embedded local one; ``"auto"`` or
    ``"ray://host:10001"`` / ``"host:6379"``: join that cluster."""
    import ray

    _default_env(address)
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 object_store_memory=int(os.environ.get("PATHFM_OBJECT_STORE_MB", "512")) * 2**20,
                 log_to_driver=verbose >= 2, configure_logging=True, logging_level="WARNING")
    else:
        if num_cpus is not None or num_gpus is not None:
            raise SweepError("--num-cpus/--num-gpus only apply to a local Ray; a cluster has its own resources")
        for attempt in range(1, CLIENT_SERVER_ATTEMPTS + 1):
            try:
                context = ray.init(address=address, log_to_driver=verbose >= 2, logging_level="WARNING")
                break
            except ConnectionError as e:
                if client_server_failed_to_start(address, str(e)) and attempt < CLIENT_SERVER_ATTEMPTS:
                    print(f"pathfm sweep: the Ray Client server at '{redact_url(address)}' did not start a server for "
                          f"this session (attempt {attempt} of {CLIENT_SERVER_ATTEMPTS}); retrying",
                          file=sys.stderr, flush=True)
                    time.sleep(2.0)
                    continue
                raise SweepError(
                    f"cannot reach a Ray cluster at '{redact_url(address)}': {redact_url(str(e))}. Start one with `ray start --head` "
                    "(or `ray up cluster/example-cluster.yaml`), and use the same RAY_AUTH_MODE/token as the cluster"
                ) from None
        if verbose >= 1 and getattr(context, "dashboard_url", None):
            print(f"pathfm sweep: Ray dashboard at http://{context.dashboard_url}", file=sys.stderr, flush=True)
    return True


def check_resources(spec: SweepSpec, *, autoscaling: bool = False) -> dict[str, float]:
    """Fail early when no node can ever host a trial; returns the cluster totals. ``autoscaling``: the
    cluster adds nodes on demand, so only warn (trials wait for the autoscaler)."""
    import ray

    totals = ray.cluster_resources()
    if autoscaling:
        return totals
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    r = spec.resources
    per_node_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    per_node_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    n_gpu = totals.get("GPU", 0.0)
    if r.gpu > 0 and n_gpu == 0:
        raise SweepError(
            f"the sweep asks for resources.gpu={r.gpu} per trial but the Ray cluster has no GPU "
            f"({totals.get('CPU', 0):.0f} CPUs, 0 GPUs): set resources.gpu: 0 to train on CPUs, or connect "
            "to a GPU cluster with --address"
        )
    if r.gpu > per_node_gpu:
        raise SweepError(f"resources.gpu={r.gpu} per trial but the largest node has {per_node_gpu:.0f} GPUs; "
                         "use workers: N with gpu: 1 for multi-GPU trials")
    if r.cpu > per_node_cpu:
        raise SweepError(f"resources.cpu={r.cpu} per trial but the largest node has {per_node_cpu:.0f} CPUs; "
                         f"lower resources.cpu to at most {per_node_cpu:.0f}")
    if r.workers > 1:
        need_gpu = r.workers * (1 if r.gpu > 0 else 0)
        if need_gpu > n_gpu or r.workers * r.cpu > totals.get("CPU", 0):
            raise SweepError(f"resources.workers={r.workers} needs {need_gpu} GPUs and {r.workers * r.cpu:g} CPUs "
                             f"per trial; the cluster has {n_gpu:.0f} GPUs and {totals.get('CPU', 0):.0f} CPUs")
    return totals


def _trial_resources(spec: SweepSpec) -> dict[str, float]:
    r = spec.resources
    if r.workers > 1:  # the trial function only drives a TorchTrainer whose workers hold the devices
        return {"cpu": 0.01}
    return {"cpu": r.cpu, "gpu": r.gpu}


# ----------------------------------------------------------------------------------- callbacks
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trial_summary_line(sweep: str, info: dict) -> str:
    """``[sweep] trial 0a1b2_00003 TERMINATED  arm=+kde seed=0 kde_weight=0.1  step 10/10  eval/...=0.61  42.0s``"""
    reason = f" ({info['stop_reason']})" if info.get("stop_reason") else ""
    parts = [f"[{sweep}] trial {info.get('trial_id')} {info.get('status')}{reason}"]
    desc = []
    if info.get("arm") is not None:
        desc.append(f"arm={info['arm']}")
    if info.get("seed") is not None:
        desc.append(f"seed={info['seed']}")
    desc += [f"{k}={_fmt(v)}" for k, v in (info.get("params") or {}).items()]
    parts.append(" ".join(desc) or "-")
    if info.get("final_step") is not None:
        parts.append(f"step {info['final_step']}/{info.get('total_steps')}")
    obj = info.get("objective") or {}
    if obj:
        key = "eval/mean_balanced_accuracy" if "eval/mean_balanced_accuracy" in obj else sorted(obj)[0]
        parts.append(f"{key}={obj[key]:.4f}")
    if info.get("wall_time_s") is not None:
        parts.append(f"{info['wall_time_s']:.1f}s")
    if info.get("status") == "ERROR" and info.get("error"):
        parts.append(f"error: {str(info['error']).splitlines()[0][:200]}")
    return "  ".join(parts)


def _make_callback(spec: SweepSpec, trials: list[dict], sweep_dir: str, verbose: int):
    from ray import tune

    from pathfm.sweeps.search import trial_of_config

    sweep_name = spec.name

    class TrialSummary(tune.Callback):
        """Driver-side: prints one line per finished trial and makes sure trial.json holds the final
        status even when the trial process could not write it (killed, stopped by the scheduler)."""

        def _finish(self, trial, status: str, error: str | None = None) -> None:
            from pathfm.sweeps.trainable import trial_dirname, update_trial_json

            run_dir = Path(sweep_dir) / trial_dirname(trial.trial_id)
            info = read_trial(run_dir)
            if info is None:
                if status != "ERROR":
                    return
                try:
                    planned = trial_of_config(spec, trials, trial.config, trial.trial_id)
                except ValueError:  # not one of the expanded trials: record the config as Tune holds it
                    planned = {"params": {k: v for k, v in trial.config.items() if k != "index"}}
                info = {"trial_id": trial.trial_id, "sweep": sweep_name, "status": "RUNNING",
                        **{k: planned.get(k) for k in ("index", "arm", "seed", "params") if k in planned}}
            if info.get("status") == "RUNNING":  # the trial process ended before it could say how
                now = time.time()
                recs = read_jsonl(run_dir / "metrics.jsonl")
                wall = float(info.get("wall_time_s") or 0.0) + now - float(info.get("attempt_started_at") or now)
                last = recs[-1] if recs else {}
                info = update_trial_json(run_dir, **dict(
                    info, status=status, error=error or info.get("error"), ended_at=now, wall_time_s=wall,
                    gpu_hours=wall * float(info.get("gpus") or 0.0) / 3600, final_step=last.get("step"),
                    tiles_seen=last.get("tiles_seen"), train_time_s=last.get("time_s"),
                    stopped_by="scheduler" if status == "STOPPED" else None))
            if verbose >= 1:
                print(trial_summary_line(sweep_name, info), file=sys.stderr, flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial, "STOPPED")

        def on_trial_error(self, iteration, trials, trial, **info):
            err = None
            try:
                if trial.error_file and Path(trial.error_file).exists():
                    err = Path(trial.error_file).read_text().strip().splitlines()[-1]
            except Exception:  # noqa: BLE001 - best effort: the trial's own trial.json has the details
                pass
            self._finish(trial, "ERROR", err)

    return TrialSummary()


# --------------------------------------------------------------------------------- sweep folder
def sweep_meta(spec: SweepSpec, trials: list[dict]) -> dict:
    return {
        "sweep": spec.name, "study": spec.meta.study, "version": spec.meta.version,
        "description": spec.meta.description, "baseline_arm": spec.meta.baseline_arm,
        "comparisons": [list(c) for c in spec.meta.comparisons], "params": list(spec.space),
        "searched_params": spec.searched_params, "arms": [a.name for a in spec.arms or []],
        "arm_labels": {a.name: a.labels for a in spec.arms or [] if a.labels},
        **({"analysis": spec.meta.analysis} if spec.meta.analysis else {}),
        "seeds": list(spec.seeds), "objective": spec.objective.model_dump(), "algorithm": spec.search.algorithm,
        "n_trials": len(trials), "base": spec.base, "created_at": time.time(),
    }


def storage_root(storage: str | Path) -> Path:
    """The local folder for ``--storage`` (a path or ``file://`` URI; cloud URIs are refused)."""
    s = str(storage)
    if "://" in s and not s.startswith("file://"):
        raise SweepError(
            f"storage '{s}': cloud URIs are not supported for trial folders yet; mount the bucket or use a "
            "shared file system path (NFS) that every node sees, e.g. --storage /mnt/shared/sweeps"
        )
    return Path(s.removeprefix("file://")).expanduser().resolve()


def _write_sweep_files(sweep_dir: Path, spec: SweepSpec, trials: list[dict]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SPEC_FILE, spec.to_yaml())
    atomic_write_json(sweep_dir / TRIALS_FILE, trials)
    atomic_write_json(sweep_dir / META_FILE, sweep_meta(spec, trials))


def _build_tuner(spec: SweepSpec, sweep_dir: Path, trials: list[dict], concurrency: int, verbose: int,
                 *, restore: bool = False, resume_errored: bool = False):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from pathfm.sweeps import search
    from pathfm.sweeps.trainable import trial_dirname
    from pathfm.sweeps.tune_entry import SweepContext, sweep_trainable

    ctx = SweepContext(spec=spec, sweep_dir=str(sweep_dir), trials=trials)
    trainable = tune.with_resources(tune.with_parameters(sweep_trainable, ctx=ctx), _trial_resources(spec))
    if restore:
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=resume_errored)
    steps = _steps_of(spec, trials)
    tune_config = tune.TuneConfig(
        num_samples=len(trials),  # expand_trials owns the count (grid/random: one Tune point per trial)
        search_alg=search.search_algorithm(spec, trials, concurrency),
        scheduler=search.scheduler(spec, steps),
        max_concurrent_trials=concurrency if spec.search.algorithm == "optuna" else None,  # else: the searcher's
        time_budget_s=spec.budget.time_s,
        trial_dirname_creator=lambda t: trial_dirname(t.trial_id),
        trial_name_creator=lambda t: f"trial_{t.trial_id}",
    )
    run_config = tune.RunConfig(
        name=sweep_dir.name,
        storage_path=str(sweep_dir.parent),
        verbose=1 if verbose >= 1 else 0,
        callbacks=[_make_callback(spec, trials, str(sweep_dir), verbose), JsonLoggerCallback(), CSVLoggerCallback()],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return tune.Tuner(trainable, param_space=search.param_space(spec), tune_config=tune_config,
                      run_config=run_config)


def _steps_of(spec: SweepSpec, trials: list[dict]) -> int:
    if trials and trials[0].get("overrides"):
        return total_steps(validate_trial(spec, trials[0]))
    from pathfm.config import load_config

    cfg = load_config(spec.base, {**spec.overrides, **({"optim.steps": spec.budget.steps} if spec.budget.steps else {})})
    return total_steps(cfg)


# -------------------------------------------------------------------------------------- dry run
def measure_step_time(spec: SweepSpec, trial: dict, steps: int = 2) -> dict[str, float]:
    """Run ``steps`` CPU training steps of ``trial`` in a temporary folder; returns the seconds of the
    first step (start-up included) and of a steady step."""
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
        train(cfg, Path(d) / "run")
        wall = time.perf_counter() - t0
        recs = read_jsonl(Path(d) / "run" / "metrics.jsonl")
    times = [r["time_s"] for r in recs]
    steady = (times[-1] - times[0]) / max(1, len(times) - 1) if len(times) > 1 else (times[0] if times else wall)
    return {"startup_s": wall - (times[-1] if times else 0.0), "step_s": steady * scale,
            "first_step_s": times[0] if times else wall, "measured_batch": cfg.data.batch_size, "scale": scale}


def preflight(spec: SweepSpec, trials: list[dict], *, step_time: float | None = None, out=None) -> dict:
    """Print the trial count, resources and estimated cost; run one CPU step of the first trial."""
    out = out if out is not None else sys.stdout
    algo = spec.search.algorithm
    n = len(trials)
    steps = _steps_of(spec, trials)
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


# ------------------------------------------------------------------------------------ public API
def run_sweep(spec: SweepSpec | str | Path, storage: str | Path = "runs/sweeps", *, address: str | None = None,
              num_cpus: int | None = None, dry_run: bool = False, verbose: int = 1,
              step_time: float | None = None, autoscaling: bool = False) -> Path:
    """Run every trial of ``spec`` and return the sweep folder ``<storage>/<spec.name>`` (holding
    ``results.parquet``). ``dry_run``: validate, print count/resources/cost, run one CPU step, stop."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    trials = expand_trials(spec)  # validates every trial config before anything expensive
    sweep_dir = storage_root(storage) / spec.name
    if dry_run:
        preflight(spec, trials, step_time=step_time)
        return sweep_dir
    if (sweep_dir / "tuner.pkl").exists() or (sweep_dir / SPEC_FILE).exists():
        raise SweepError(f"{sweep_dir} already holds a sweep; continue it with `pathfm sweep resume {sweep_dir}` "
                         "or give the spec another name (or another --storage)")
    ensure_writable_dir(sweep_dir.parent, "sweep storage (--storage)")  # before Ray starts
    started = connect(address, num_cpus=num_cpus, verbose=verbose)
    try:
        totals = check_resources(spec, autoscaling=autoscaling)
        concurrency = concurrent_trials(spec.resources, spec.max_concurrent_trials, totals)
        if autoscaling and spec.max_concurrent_trials is None:
            concurrency = max(concurrency, len(trials))
        _write_sweep_files(sweep_dir, spec, trials)
        prepare_tracking(spec.tracking)
        if verbose >= 1:
            print(f"pathfm sweep: '{spec.name}' with {len(trials)} trial(s), up to {concurrency} at once, "
                  f"in {sweep_dir}", file=sys.stderr, flush=True)
        tuner = _build_tuner(spec, sweep_dir, trials, concurrency, verbose)
        t0 = time.time()
        reference = start_reference(spec, sweep_dir, trials, verbose=verbose)  # once per sweep, beside the trials
        tuner.fit()
        finish_reference(reference)
        _record_driver_time(sweep_dir, time.time() - t0)
    finally:
        if started:
            import ray

            ray.shutdown()
    return _collect_and_report(sweep_dir, verbose)


def resume_sweep(sweep_dir: str | Path, *, address: str | None = None, num_cpus: int | None = None,
                 retry_errored: bool = False, verbose: int = 1, autoscaling: bool = False) -> Path:
    """Continue a sweep whose driver stopped: finished trials are kept, unfinished ones resume from their
    last checkpoint, pending ones start; ``retry_errored`` also retries errored trials."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    spec_path = sweep_dir / SPEC_FILE
    if not spec_path.exists():
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}); start one with `pathfm sweep run SPEC`")
    spec = load_spec(spec_path)
    trials = json.loads((sweep_dir / TRIALS_FILE).read_text())
    started = connect(address, num_cpus=num_cpus, verbose=verbose)
    try:
        from ray import tune

        if not tune.Tuner.can_restore(str(sweep_dir)):
            raise SweepError(f"{sweep_dir}: Ray wrote no experiment state yet (the driver died at start-up); "
                             f"remove the folder and run the spec again")
        check_resources(spec, autoscaling=autoscaling)
        tuner = _build_tuner(spec, sweep_dir, trials, 0, verbose, restore=True, resume_errored=retry_errored)
        t0 = time.time()
        reference = start_reference(spec, sweep_dir, trials, verbose=verbose)  # no-op when already there
        results = tuner.fit()
        finish_reference(reference)
        _record_driver_time(sweep_dir, time.time() - t0)
        _set_aside_lost_trials(sweep_dir, {Path(r.path).name for r in results if r.path}, verbose)
    finally:
        if started:
            import ray

            ray.shutdown()
    return _collect_and_report(sweep_dir, verbose)


def _collect_and_report(sweep_dir: Path, verbose: int) -> Path:
    out = collect(sweep_dir)
    if verbose >= 1:
        print(format_status(sweep_dir), file=sys.stderr)
        print(f"results: {out}", file=sys.stderr)
    return sweep_dir


def _set_aside_lost_trials(sweep_dir: Path, known: set[str], verbose: int) -> None:
    """Move trial folders that the restored Ray experiment does not know to ``lost_trials/``: a driver that
    died (SIGKILL, crash) after a trial started but before Ray's next experiment snapshot (every >= 10 s)
    loses that trial; Ray re-creates it under a new id (the restored searcher proposes the same point), so
    the orphaned folder would otherwise count twice in results.parquet."""
    for d in trial_dirs(sweep_dir):
        if d.name not in known:
            (sweep_dir / "lost_trials").mkdir(exist_ok=True)
            os.replace(d, sweep_dir / "lost_trials" / d.name)
            if verbose >= 1:
                print(f"pathfm sweep: {d.name} was lost with the previous driver (it started after Ray's last "
                      f"experiment snapshot) and ran again as a new trial; moved to lost_trials/", file=sys.stderr)


def _record_driver_time(sweep_dir: Path, seconds: float) -> None:
    meta = read_sweep_meta(sweep_dir)
    meta.setdefault("driver_sessions", []).append({"ended_at": time.time(), "wall_time_s": seconds})
    atomic_write_json(sweep_dir / META_FILE, meta)


def format_status(sweep_dir: str | Path) -> str:
    """A plain-text table of the trials of a sweep (no Ray needed)."""
    from pathfm.sweeps.collect import summarize

    rows = summarize(Path(sweep_dir))
    if not rows:
        return f"{sweep_dir}: no trial has started yet"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    meta = read_sweep_meta(Path(sweep_dir))
    total = meta.get("n_trials")
    head = f"sweep {meta.get('sweep', Path(sweep_dir).name)}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if total:
        head += f" ({len(rows)} of {total} started)"
    obj_key = (meta.get("objective") or {}).get("metric", "eval/mean_balanced_accuracy")
    lines = [head, f"{'trial':<14} {'status':<20} {'arm':<12} {'seed':>4} {'step':>9}  {obj_key:<28} params"]
    for r in rows:
        obj = r["objective"].get(obj_key)
        params = " ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        step = f"{r['step']}/{r['total_steps'] or '?'}"
        status = f"{r['status']} ({r['stop_reason']})" if r.get("stop_reason") else str(r["status"])
        lines.append(f"{str(r['trial_id']):<14} {status:<20} {str(r['arm'] or '-'):<12} "
                     f"{str(r['seed'] if r['seed'] is not None else '-'):>4} {step:>9}  "
                     f"{(f'{obj:.4f}' if isinstance(obj, float) else '-'):<28} {params}")
        if r["status"] == "ERROR" and r["error"]:
            lines.append(f"{'':<14} error: {str(r['error']).splitlines()[0][:160]}")
    from pathfm.sweeps.collect import read_reference

    ref = read_reference(Path(sweep_dir))
    if ref.get("status"):
        how = f"arm {ref.get('arm')}" + (f", {ref['wall_time_s']:.1f}s" if isinstance(ref.get("wall_time_s"), float) else "")
        err = f": {str(ref['error']).splitlines()[0][:160]}" if ref.get("error") else ""
        lines.append(f"reference rows (random init, colour histogram; once per sweep): {ref['status']} ({how}){err}")
    return "\n".join(lines)


__all__ = ["SweepError", "check_resources", "collect", "connect", "format_status", "preflight", "load_spec",
           "resume_sweep", "run_sweep", "spec_from_dict"]
