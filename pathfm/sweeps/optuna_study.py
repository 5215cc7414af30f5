"""``pathfm sweep optuna SPEC``: a plain Optuna study (no Ray) on an RDB storage, with pruning.

For users without Ray: each worker process (``--workers N`` here, or the same command started on
other hosts against a shared PostgreSQL/MySQL URL) loads the study and runs trials; every trial is
the same train + evaluate as a Ray trial and writes the same trial folder
(``<sweep_dir>/optuna_<number>/``), so ``pathfm sweep collect`` and the analysis work unchanged.

* Storage: ``sqlite:///<sweep_dir>/optuna.db`` by default (one host); any SQLAlchemy URL otherwise.
  The study is created once by the launcher before workers start (avoids SQLite's schema race).
* Sampler: TPE seeded with ``search.seed`` (+ worker index, so workers do not propose the same point).
* Pruning: ``scheduler.type: asha`` -> ``SuccessiveHalvingPruner`` on the scheduler metric reported
  every ``report_every`` steps (``trial.report``; sign-flipped when its direction differs from the
  objective's, since Optuna pruners follow the study direction); otherwise no pruning.
* Resume: run the command again; the study continues where it stopped (finished trials stay).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError
from pathfm.sweeps.spec import SweepSpec, expand_trials, load_spec, optuna_categories, trial_from_sample


class StopTrial(Exception):
    """Raised by a report function to stop a trial early (a pruner's decision)."""


def _storage(url: str):
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, **kwargs)


def _pruner(spec: SweepSpec):
    import optuna

    if spec.scheduler.type != "asha":
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.scheduler.grace_period * spec.report_every,
                                                  reduction_factor=spec.scheduler.reduction_factor)


def _categorical(values: list) -> tuple[list, dict]:
    """Optuna categoricals must be None/bool/int/float/str: encode other values as JSON strings."""
    enc, back = [], {}
    for v in values:
        if v is None or isinstance(v, (bool, int, float, str)):
            enc.append(v)
        else:
            s = json.dumps(v)
            enc.append(s)
            back[s] = v
    return enc, back


def suggest(trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample one point of the spec's space (plus arm/seed categories) with an Optuna trial."""
    out: dict[str, Any] = {}
    for name, d in spec.space.items():
        k = d.kind
        if k in ("choice", "grid"):
            enc, back = _categorical(d.values())
            v = trial.suggest_categorical(name, enc)
            out[name] = back.get(v, v) if isinstance(v, str) else v
        elif k == "uniform":
            out[name] = trial.suggest_float(name, *d.uniform)
        elif k == "loguniform":
            out[name] = trial.suggest_float(name, *d.loguniform, log=True)
        elif k == "int":
            out[name] = trial.suggest_int(name, *d.int_, log=d.log)
        else:
            out[name] = d.constant
    for name, values in optuna_categories(spec).items():
        out[name] = trial.suggest_categorical(name, values)
    return out


def make_objective(spec: SweepSpec, sweep_dir: Path):
    """The Optuna objective: train + evaluate one trial in ``sweep_dir/optuna_<number>``."""
    from pathfm.sweeps.trainable import run_trial

    metric, mode = spec.scheduler_metric()
    sign = 1.0 if mode == spec.objective.mode else -1.0

    def objective(trial) -> float:
        import optuna

        sample = suggest(trial, spec)
        t = trial_from_sample(spec, trial.number, sample)
        trial_id = f"optuna_{trial.number:05d}"

        reported: set[int] = set()

        def report(metrics: dict, checkpoint: Any = None) -> None:
            if metric in metrics and "step" in metrics and int(metrics["step"]) not in reported:
                reported.add(int(metrics["step"]))
                trial.report(sign * float(metrics[metric]), step=int(metrics["step"]))
                if trial.should_prune():
                    raise StopTrial

        final = run_trial(spec, t, sweep_dir / trial_id, trial_id=trial_id, sweep=spec.name, report=report)
        from pathfm.sweeps.collect import read_trial

        if (read_trial(sweep_dir / trial_id) or {}).get("status") == "STOPPED":
            raise optuna.TrialPruned()
        if spec.objective.metric not in final:
            raise PathfmError(f"trial {trial_id} finished without the objective '{spec.objective.metric}' "
                              "(is eval.enabled false? use an in-training objective such as 'loss')")
        return float(final[spec.objective.metric])

    return objective


def _worker(spec_yaml: str, sweep_dir: str, storage_url: str, n_trials: int, worker: int) -> None:
    import optuna
    import yaml

    from pathfm.sweeps.spec import spec_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = spec_from_dict(yaml.safe_load(spec_yaml))
    study = optuna.load_study(study_name=spec.name, storage=_storage(storage_url),
                              sampler=optuna.samplers.TPESampler(seed=spec.search.seed + worker),
                              pruner=_pruner(spec))
    study.optimize(make_objective(spec, Path(sweep_dir)), n_trials=n_trials, catch=(Exception,),
                   callbacks=[_print_trial(spec.name, Path(sweep_dir))])


def _print_trial(name: str, sweep_dir: Path):
    from pathfm.sweeps.collect import read_trial
    from pathfm.sweeps.runner import trial_summary_line

    def cb(study, frozen) -> None:
        info = read_trial(sweep_dir / f"optuna_{frozen.number:05d}") or {"trial_id": frozen.number,
                                                                           "status": frozen.state.name}
        print(trial_summary_line(name, info), file=sys.stderr, flush=True)

    return cb


def run_optuna_study(spec: SweepSpec | str | Path, *, storage: str | None = None, root: str | Path = "runs/sweeps",
                     n_trials: int | None = None, workers: int = 1) -> Path:
    """Run (or continue) a plain Optuna study; returns the sweep folder (results.parquet collected)."""
    import optuna

    from pathfm.io import atomic_write_json, atomic_write_text, redact_url
    from pathfm.sweeps.collect import META_FILE, collect
    from pathfm.sweeps.runner import SPEC_FILE, format_status, sweep_meta

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if workers < 1:
        raise PathfmError(f"--workers must be >= 1, got {workers}")
    if spec.resources.workers > 1:
        raise PathfmError("resources.workers > 1 (DDP trials) needs Ray: use `pathfm sweep run`")
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"algorithm": "optuna"})})
    expand_trials(spec)  # validates the configs at every bound before any work
    sweep_dir = Path(root).expanduser().resolve() / spec.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    total = n_trials if n_trials is not None else spec.search.num_samples
    atomic_write_text(sweep_dir / SPEC_FILE, spec.to_yaml())
    meta = sweep_meta(spec, [])
    meta.update(algorithm="optuna-plain", n_trials=total, optuna_storage=redact_url(url))
    atomic_write_json(sweep_dir / META_FILE, meta)
    # create the study (and its schema) once, before any worker touches the storage
    optuna.create_study(study_name=spec.name, storage=_storage(url), load_if_exists=True,
                        direction="maximize" if spec.objective.mode == "max" else "minimize",
                        sampler=optuna.samplers.TPESampler(seed=spec.search.seed), pruner=_pruner(spec))
    shares = [total // workers + (1 if i < total % workers else 0) for i in range(workers)]
    print(f"pathfm sweep optuna: study '{spec.name}' on {redact_url(url)}: {total} trial(s) over {workers} worker(s), "
          f"trial folders in {sweep_dir}", file=sys.stderr, flush=True)
    spec_yaml = spec.to_yaml()
    if workers == 1:
        _worker(spec_yaml, str(sweep_dir), url, shares[0], 0)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(spec_yaml, str(sweep_dir), url, n, i), daemon=False)
                 for i, n in enumerate(shares) if n > 0]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise PathfmError(f"{len(bad)} Optuna worker process(es) exited with codes {bad}; see the log above")
    out = collect(sweep_dir)
    print(format_status(sweep_dir), file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    return sweep_dir
