"""A sweep's reference rows: the honesty baselines evaluated ONCE per sweep instead of once per trial.

The random initialisation of the architecture (``random_init``, at ``eval.random_init_seeds`` init seeds from
:data:`pathfm.eval.backbones.RANDOM_INIT_SEED` on: one untrained network is one draw, and "beats an untrained
network" compares the arms' seeds with these draws) and colour histograms (``color_histogram``) are probed on
the sweep's tasks with its probes, evaluation seeds and folds: exactly the rows ``evaluate(trial, baselines=True)``
would add to every trial, which all trials of one architecture would share. They depend only on

* the model config and the input normalisation (``data.normalize_mean/std``) of the reference config: the
  first trial of the baseline arm (``meta.baseline_arm``), else the first trial;
* the tasks (name and content fingerprint), probes, evaluation seeds, folds, pooling and resolution,

so they are cached under a key of exactly those (sha256): ``<sweep_dir>/reference/`` holds
``eval.parquet`` (tidy eval rows, :mod:`pathfm.results`) and ``reference.json`` (key, settings,
status, error, wall time); a copy in ``<storage>/.pathfm_reference/<key>.parquet`` lets every sweep in the
same storage reuse it. :func:`pathfm.sweeps.collect.collect` adds the rows to ``results.parquet`` with
``trial_id = "reference"`` (docs/architecture.md). A failed reference evaluation is recorded and reported,
never fatal to the sweep.

The evaluation runs as a Ray task with one trial's resources (on a cluster: where a trial could run),
started before the trials and awaited after them; :func:`ensure_reference` without Ray runs it in-process
(``pathfm sweep reference DIR``, plain Optuna studies).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathfm.io import atomic_path
from pathfm.records import RunFolder, SweepFolder
from pathfm.sweeps.spec import SweepSpec, trial_overrides

REFERENCE_VERSION = 2  # 2: random init at several init seeds


def reference_config(spec: SweepSpec, trials: list[dict]) -> tuple[str | None, Any]:
    """``(arm, Config)`` the reference is computed for: the baseline arm's first trial, else the first trial
    (an adaptive search: the spec's base with the baseline arm's or first arm's overrides)."""
    from pathfm.config import load_config

    baseline = spec.meta.baseline_arm
    concrete = [t for t in trials if t.get("overrides")]
    pick = next((t for t in concrete if baseline is not None and t.get("arm") == baseline), None)
    pick = pick or (concrete[0] if concrete else None)
    if pick is not None:
        return pick.get("arm"), load_config(spec.base, dict(pick["overrides"]))
    arm = baseline or (spec.arms[0].name if spec.arms else None)
    seed = None if "seed" in spec.space else spec.seeds[0]
    params = {k: d.constant for k, d in spec.space.items() if d.kind == "constant"}
    return arm, load_config(spec.base, trial_overrides(spec, arm, seed, params))


def reference_settings(spec: SweepSpec, cfg: Any) -> dict[str, Any]:
    """Everything the reference rows depend on (the cache key is a hash of this)."""
    from pathfm.eval.backbones import RANDOM_INIT_SEED
    from pathfm.eval.tasks import get_task

    tasks = list(spec.eval.tasks)
    fingerprints = {t: get_task(t, n_folds=spec.eval.n_folds).fingerprint for t in tasks}
    return {
        "version": REFERENCE_VERSION,
        "model": cfg.model.model_dump(mode="json"),
        "normalize_mean": float(cfg.data.normalize_mean),
        "normalize_std": float(cfg.data.normalize_std),
        "tasks": tasks,
        "task_fingerprints": fingerprints,
        "probes": list(spec.eval.probes),
        "seeds": [0],  # the evaluation seeds of a trial (evaluate_trial uses evaluate's default)
        "n_folds": spec.eval.n_folds,
        "pooling": "cls+mean",
        "resize": None,
        "random_init_seeds": [RANDOM_INIT_SEED + i for i in range(spec.eval.random_init_seeds)],
    }


def reference_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def evaluate_reference(settings: dict[str, Any], out_dir: str, device: str = "auto") -> dict[str, Any]:
    """Evaluate the baselines of ``settings`` and write ``out_dir/eval.parquet`` atomically (runs wherever it
    is called: a Ray task or the driver). Returns ``{"rows", "wall_time_s", "hostname"}``."""
    import socket

    from pathfm.eval.backbones import reference_backbone
    from pathfm.eval.evaluation import evaluate

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bb = reference_backbone(settings["model"], mean=settings["normalize_mean"], std=settings["normalize_std"],
                            name=f"reference:{settings['model'].get('arch')}")
    kwargs: dict[str, Any] = {}
    if settings.get("n_folds") is not None:
        kwargs["n_folds"] = settings["n_folds"]
    df = evaluate(bb, tasks=settings["tasks"], probes=settings["probes"], seeds=settings["seeds"],
                  pooling=settings["pooling"], resize=settings["resize"], trained=False, baselines=True,
                  random_init_seeds=settings["random_init_seeds"],
                  cache_dir=RunFolder(out).eval_cache, output=None, progress=False, verbose=False, device=device, **kwargs)
    with atomic_path(RunFolder(out).eval) as tmp:
        df.write_parquet(tmp)
    return {"rows": df.height, "wall_time_s": time.time() - t0, "hostname": socket.gethostname()}


@dataclass
class PendingReference:
    """A reference evaluation under way (a Ray task), or an already settled one (``ref`` None)."""

    sweep_dir: Path
    info: dict[str, Any]
    ref: Any = None  # ray.ObjectRef
    gpus: float = 0.0
    verbose: int = 1


def _say(verbose: int, text: str) -> None:
    if verbose >= 1:
        print(f"pathfm sweep: {text}", file=sys.stderr, flush=True)


def _prepare(spec: SweepSpec, sweep_dir: Path, trials: list[dict], verbose: int) -> tuple[dict, bool]:
    """``(info, needed)``: reference.json content, and whether the evaluation still has to run (not when
    it is disabled, already done with the same key, or found in the storage cache)."""
    sweep_dir = Path(sweep_dir)
    if not (spec.eval.enabled and spec.eval.reference):
        return {"status": "DISABLED"}, False
    try:
        arm, cfg = reference_config(spec, trials)
        settings = reference_settings(spec, cfg)
    except Exception as e:  # noqa: BLE001 - a reference that cannot be set up must not stop the sweep
        info = SweepFolder(sweep_dir).write_reference({"status": "ERROR", "error": f"{type(e).__name__}: {e}",
                                                        "created_at": time.time()})
        _say(verbose, f"no reference rows (random init / colour histogram): {info['error']}")
        return info, False
    key = reference_key(settings)
    folder = SweepFolder(sweep_dir)
    old = folder.read_reference()
    done = folder.reference_eval.exists()
    if old.get("key") == key and old.get("status") == "DONE" and done:
        return old, False
    info = {"key": key, "arm": arm, "status": "RUNNING", "error": None, "settings": settings, "created_at": time.time()}
    cached = folder.reference_cache(key)
    if cached.exists():
        try:
            folder.reference_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder.reference_eval) as tmp:
                shutil.copyfile(cached, tmp)
            info.update(status="DONE", cached_from=str(cached), wall_time_s=0.0)
            _say(verbose, f"reference rows (random init / colour histogram) reused from {cached}")
            return folder.write_reference(info), False
        except OSError:
            pass  # an unreadable cache entry: evaluate again
    return folder.write_reference(info), True


def _settle(sweep_dir: Path, info: dict, result: dict | None, error: str | None, gpus: float, verbose: int) -> dict:
    if error is not None:
        info = dict(info, status="ERROR", error=error, ended_at=time.time())
        _say(verbose, f"the reference evaluation (random init / colour histogram) failed: {error[:300]}; the "
             "sweep's results have no reference rows (run it again with `pathfm sweep reference DIR`)")
        return SweepFolder(sweep_dir).write_reference(info)
    wall = float((result or {}).get("wall_time_s") or 0.0)
    info = dict(info, status="DONE", error=None, ended_at=time.time(), wall_time_s=wall, gpu_hours=wall * gpus / 3600,
                hostname=(result or {}).get("hostname"))
    folder = SweepFolder(sweep_dir)
    cached = folder.reference_cache(info["key"])
    try:  # best effort: a read-only storage root only loses the cross-sweep reuse
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            shutil.copyfile(folder.reference_eval, tmp)
    except OSError:
        pass
    _say(verbose, f"reference rows (random init / colour histogram, arm {info.get('arm')}) evaluated in {wall:.1f}s")
    return folder.write_reference(info)


def _ray_resources(spec: SweepSpec) -> tuple[float, float]:
    """(CPUs, GPUs) of the reference task: one trial's, or one worker's for a DDP trial."""
    r = spec.resources
    gpus = float(r.gpu) if r.workers == 1 else (1.0 if r.gpu > 0 else 0.0)
    return float(r.cpu), gpus


def start_reference(spec: SweepSpec, sweep_dir: str | Path, trials: list[dict], *, verbose: int = 1) -> PendingReference:
    """Start the reference evaluation as a Ray task (Ray must be connected); await it with
    :func:`finish_reference`."""
    sweep_dir = Path(sweep_dir)
    info, needed = _prepare(spec, sweep_dir, trials, verbose)
    if not needed:
        return PendingReference(sweep_dir, info, verbose=verbose)
    cpus, gpus = _ray_resources(spec)
    try:
        import ray

        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(evaluate_reference)
        ref = task.remote(info["settings"], str(SweepFolder(sweep_dir).reference_dir), "cpu" if gpus <= 0 else "auto")
    except Exception as e:  # noqa: BLE001
        info = _settle(sweep_dir, info, None, f"{type(e).__name__}: {e}", gpus, verbose)
        return PendingReference(sweep_dir, info, verbose=verbose)
    _say(verbose, f"evaluating the reference rows (random init / colour histogram of arm {info.get('arm')}) "
         f"once for the whole sweep, beside the trials")
    return PendingReference(sweep_dir, info, ref, gpus, verbose)


def finish_reference(pending: PendingReference | None) -> dict[str, Any]:
    """Wait for a :func:`start_reference` task and record its outcome; returns reference.json's content."""
    if pending is None:
        return {}
    if pending.ref is None:
        return pending.info
    import ray

    try:
        result = ray.get(pending.ref)
    except Exception as e:  # noqa: BLE001 - recorded in reference.json and reported, never fatal
        return _settle(pending.sweep_dir, pending.info, None, _error_text(e), pending.gpus, pending.verbose)
    return _settle(pending.sweep_dir, pending.info, result, None, pending.gpus, pending.verbose)


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError wraps the task's own exception
    err = cause if isinstance(cause, BaseException) else e
    return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"


def ensure_reference(spec: SweepSpec, sweep_dir: str | Path, trials: list[dict], *, verbose: int = 1,
                     device: str | None = None) -> dict[str, Any]:
    """Compute the reference rows in this process unless they are there already (same key) or cached."""
    sweep_dir = Path(sweep_dir)
    info, needed = _prepare(spec, sweep_dir, trials, verbose)
    if not needed:
        return info
    gpus = _ray_resources(spec)[1]
    dev = device or ("cpu" if gpus <= 0 else "auto")
    try:
        result = evaluate_reference(info["settings"], str(SweepFolder(sweep_dir).reference_dir), dev)
    except Exception as e:  # noqa: BLE001
        info["traceback"] = traceback.format_exc()
        return _settle(sweep_dir, info, None, f"{type(e).__name__}: {e}", gpus, verbose)
    return _settle(sweep_dir, info, result, None, gpus, verbose)
