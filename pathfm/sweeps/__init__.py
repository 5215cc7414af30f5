"""Sweeps: one YAML spec -> every trial trained, evaluated and recorded, on local Ray or a Ray cluster.

Public API (imported lazily so ``pathfm --help`` stays instant)::

    from pathfm.sweeps import load_spec, expand_trials, run_sweep, resume_sweep, run_optuna_study
    from pathfm.sweeps.runner import collect               # (pathfm.sweeps.collect is the module)
    spec = load_spec("sweeps/examples/kde_smoke.yaml")    # validated SweepSpec
    trials = expand_trials(spec)                          # one dict per trial, every config validated
    sweep_dir = run_sweep(spec, "runs/sweeps")            # local Ray; address="auto" for a cluster
    resume_sweep(sweep_dir)                               # after the driver died
    collect(sweep_dir)                                    # results.parquet from the trial folders
    run_optuna_study(spec, workers=2)                     # plain Optuna on SQLite/PostgreSQL, no Ray

Modules: ``spec`` (the spec and its expansion), ``search`` (Tune space, OptunaSearch, ASHA),
``trainable`` (the trial), ``distributed`` (DDP trials via Ray Train), ``runner`` (launch/resume/status),
``collect`` (results.parquet), ``optuna_study`` (plain Optuna), ``cli`` (``pathfm sweep``). What a sweep runs
on (Ray, object stores, Optuna storage, the hang watchdog, SLURM) is :mod:`pathfm.infra`.
"""

from __future__ import annotations

from pathfm._lazy import lazy_exports

_EXPORTS = {
    "SweepSpec": "pathfm.sweeps.spec",
    "Distribution": "pathfm.sweeps.spec",
    "Arm": "pathfm.sweeps.spec",
    "load_spec": "pathfm.sweeps.spec",
    "spec_from_dict": "pathfm.sweeps.spec",
    "expand_trials": "pathfm.sweeps.spec",
    "run_sweep": "pathfm.sweeps.runner",
    "resume_sweep": "pathfm.sweeps.runner",
    "format_status": "pathfm.sweeps.runner",
    "SweepError": "pathfm.sweeps.runner",
    "results_frame": "pathfm.sweeps.collect",
    "run_optuna_study": "pathfm.sweeps.optuna_study",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
