"""Launch and resume sweeps on local Ray or an existing Ray cluster (connecting and resource checks:
:mod:`pathfm.infra.ray_cluster`; ``--dry-run``: :mod:`pathfm.sweeps.preflight`; status: :mod:`pathfm.sweeps.status`).

``run_sweep(spec)`` validates every trial, connects to Ray (embedded local Ray by default,
``address="auto"`` or ``"ray://head:10001"`` for a cluster), checks that the cluster can ever run a
trial (a GPU request on a CPU-only cluster fails here with a clear message instead of pending
forever), writes ``sweep_spec.yaml``, ``sweep_meta.json`` and ``trials.json`` into the sweep folder
``<storage>/<name>``, runs the Tuner (Ray's progress table plus one summary line per finished
trial) and finally rebuilds ``results.parquet`` (the folder's files: :mod:`pathfm.records.sweep_folder`).
``resume_sweep(dir)`` restores the experiment (``Tuner.restore``): finished trials are kept, unfinished ones
continue from their checkpoints.
Beside the trials, one Ray task evaluates the sweep's reference rows (the random-init and colour-histogram
baselines, once per sweep: :mod:`pathfm.sweeps.reference`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from pathfm.errors import SweepError
from pathfm.infra import object_store
from pathfm.infra.hang import no_retry_warning
from pathfm.infra.object_store import RemoteStorage
from pathfm.infra.ray_cluster import check_resources, client_server_failed_to_start, connect, trial_resources
from pathfm.infra.sweep_sync import (SweepFilesMirror, ddp_store_warning, gather_trial, gather_trials, mirror_sweep,
                                     recorded_store, set_aside_in_store, stage_from_store)
from pathfm.io import ensure_writable_dir, read_jsonl
from pathfm.records import RunFolder, SweepFolder, TrialRecord, sweep_meta, trial_dirname, update_trial
from pathfm.records.sweep_folder import LOST_TRIALS_DIR, SPEC_FILE, TRIALS_FILE
from pathfm.sweeps.collect import collect
from pathfm.sweeps.cost import concurrent_trials
from pathfm.sweeps.preflight import preflight, steps_per_trial
from pathfm.sweeps.reference import finish_reference, start_reference
from pathfm.sweeps.spec import (SweepSpec, check_search_space, expand_trials, load_spec, spec_from_dict,
                                sweep_hang_timeouts, trial_configs)
from pathfm.sweeps.status import format_status, trial_summary_line
from pathfm.tracking import prepare_tracking


# ----------------------------------------------------------------------------------- callbacks
def _make_callback(spec: SweepSpec, trials: list[dict], sweep_dir: str, verbose: int):
    from ray import tune

    from pathfm.sweeps.search import trial_of_config

    sweep_name = spec.name
    expanded = trials  # the sweep's trials (Tune's callbacks get its own Trial objects as `trials`)
    store = recorded_store(Path(sweep_dir))  # an object-store sweep: trials of other nodes are read from there
    sweep_files = SweepFilesMirror(Path(sweep_dir), store) if store is not None else None

    class TrialSummary(tune.Callback):
        """Driver-side: prints one line per started and per finished trial (Ray Tune's own tables only with
        --verbose) and makes sure trial.json holds the final status even when the trial process could not
        write it (killed, stopped by the scheduler); on an object-store sweep, keeps the store's copy of the
        sweep-level files (Tune's state) current."""

        started = finished = 0

        def on_trial_start(self, iteration, trials, trial, **info):  # Tune passes these by keyword
            self.started += 1
            if verbose >= 1:
                try:
                    planned = trial_of_config(spec, expanded, trial.config, trial.trial_id)
                except ValueError:  # not one of the expanded trials (an adaptive search's own point)
                    planned = {"params": {k: v for k, v in trial.config.items() if k != "index"}}
                record = TrialRecord.from_dict({"trial_id": trial.trial_id, "status": "RUNNING",
                                                **{k: planned.get(k) for k in ("arm", "seed", "params")}})
                print(f"{trial_summary_line(sweep_name, record)}  (started {self.started} of {len(expanded)})",
                      file=sys.stderr, flush=True)

        def on_step_end(self, iteration, trials, **info):
            if sweep_files is not None:
                sweep_files.maybe_push(time.monotonic())

        def _finish(self, trial, status: str, error: str | None = None) -> None:
            run_dir = SweepFolder(sweep_dir).trial_dir(trial.trial_id)
            if store is not None:
                gather_trial(run_dir, store)
            info = TrialRecord.read(run_dir)
            planned: dict = {}
            if info is None:
                if status != "ERROR":
                    return
                try:
                    planned = trial_of_config(spec, trials, trial.config, trial.trial_id)
                except ValueError:  # not one of the expanded trials: record the config as Tune holds it
                    planned = {"params": {k: v for k, v in trial.config.items() if k != "index"}}
                planned = {"trial_id": trial.trial_id, "sweep": sweep_name, "status": "RUNNING",
                           **{k: planned.get(k) for k in ("index", "arm", "seed", "params") if k in planned}}
                info = TrialRecord.from_dict(planned)
            if info.status == "RUNNING":  # the trial process ended before it could say how
                now = time.time()
                recs = read_jsonl(RunFolder(run_dir).metrics)
                wall = float(info.wall_time_s or 0.0) + now - float(info.attempt_started_at or now)
                last = recs[-1] if recs else {}
                info = update_trial(run_dir, **dict(
                    planned, status=status, error=error or info.error, ended_at=now, wall_time_s=wall,
                    gpu_hours=wall * float(info.gpus or 0.0) / 3600, final_step=last.get("step"),
                    tiles_seen=last.get("tiles_seen"), train_time_s=last.get("time_s"),
                    stopped_by="scheduler" if status == "STOPPED" else None))
            self.finished += 1
            if verbose >= 1:
                print(f"{trial_summary_line(sweep_name, info)}  ({self.finished} of {len(expanded)} done)",
                      file=sys.stderr, flush=True)
            if sweep_files is not None:
                sweep_files.push_now(time.monotonic())

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
def storage_root(storage: str | Path) -> Path:
    """The local folder for ``--storage``: a path, a ``file:///abs`` URI, or for an object-store URI
    (``s3://``, ``gs://``, ...) the local staging folder the sweep runs in before it is mirrored there
    (:mod:`pathfm.infra.object_store`)."""
    if object_store.is_uri(storage) and not str(storage).startswith("file://"):
        return object_store.staging_dir(object_store.open_storage(str(storage)))
    return object_store.local_root(storage)


def _write_sweep_files(sweep_dir: Path, spec: SweepSpec, trials: list[dict]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    folder = SweepFolder(sweep_dir)
    folder.write_spec(spec)
    folder.write_trials(trials)
    folder.write_meta(sweep_meta(spec, trials))


def sweep_trials(sweep_dir: Path, spec: SweepSpec) -> list[dict]:
    """The trials of a sweep folder: its ``trials.json``, or when that is missing (moved aside because it was
    damaged) the same expansion of the spec that `pathfm sweep run` wrote, written back."""
    trials = SweepFolder(sweep_dir).read_trials_file()
    if trials is None:
        trials = expand_trials(spec, validate=False)
        SweepFolder(sweep_dir).write_trials(trials)
        print(f"pathfm sweep: {TRIALS_FILE} rebuilt from {SPEC_FILE} ({len(trials)} trials)", file=sys.stderr)
    return trials


def _build_tuner(spec: SweepSpec, sweep_dir: Path, trials: list[dict], concurrency: int, verbose: int,
                 *, restore: bool = False, resume_errored: bool = False, configs: list | None = None, store=None):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from pathfm.sweeps import search
    from pathfm.sweeps.tune_entry import SweepContext, sweep_trainable

    ctx = SweepContext(spec=spec, sweep_dir=str(sweep_dir), trials=trials, configs=list(configs or []), store=store)
    trainable = tune.with_resources(tune.with_parameters(sweep_trainable, ctx=ctx), trial_resources(spec))
    if restore:
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=resume_errored)
    steps = steps_per_trial(spec, trials, configs)
    tune_config = tune.TuneConfig(
        num_samples=len(trials),  # expand_trials owns the count (grid/random: one Tune point per trial)
        search_alg=search.search_algorithm(spec, trials, concurrency),
        scheduler=search.scheduler(spec, steps),
        max_concurrent_trials=concurrency if spec.search.algorithm == "optuna" else None,  # else: the searcher's
        time_budget_s=spec.budget.time_s,
        trial_dirname_creator=lambda t: trial_dirname(t.trial_id),
        trial_name_creator=lambda t: trial_dirname(t.trial_id),
    )
    run_config = tune.RunConfig(
        name=sweep_dir.name,
        storage_path=str(sweep_dir.parent),
        verbose=1 if verbose >= 2 else 0,  # Tune's per-trial tables: --verbose (pathfm prints a line per trial)
        callbacks=[_make_callback(spec, trials, str(sweep_dir), verbose), JsonLoggerCallback(), CSVLoggerCallback()],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return tune.Tuner(trainable, param_space=search.param_space(spec), tune_config=tune_config,
                      run_config=run_config)


@contextlib.contextmanager
def tune_terminal_output(verbose: int) -> Iterator[None]:
    """Ray Tune's own terminal output: its status and per-trial tables only at ``verbose >= 2`` (--verbose).
    Below that, none: Tune's new output engine prints its experiment table even at verbosity 0, the legacy
    one nothing, so the legacy one runs (pathfm prints its own line per trial)."""
    if verbose >= 2:
        yield
        return
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


# ------------------------------------------------------------------------------------ public API
def run_sweep(spec: SweepSpec | str | Path, storage: str | Path = "runs/sweeps", *, address: str | None = None,
              num_cpus: int | None = None, dry_run: bool = False, verbose: int = 1,
              step_time: float | None = None, autoscaling: bool = False, filesystem=None) -> Path:
    """Run every trial of ``spec`` and return the sweep folder ``<storage>/<spec.name>`` (holding
    ``results.parquet``). ``dry_run``: validate, print count/resources/cost, run one CPU step, stop.
    An object-store ``storage`` URI (or a pyarrow/fsspec ``filesystem`` with ``storage`` its path) runs in
    a local staging folder, returned, and mirrors it to ``<storage>/<spec.name>`` (:mod:`pathfm.infra.object_store`)."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    check_search_space(spec)  # an Optuna search over nothing: refused before anything starts
    on_remote = filesystem is not None or (object_store.is_uri(storage) and not str(storage).startswith("file://"))
    remote = object_store.open_storage(str(storage), filesystem).child(spec.name) if on_remote else None
    trials = expand_trials(spec, validate=False)
    configs = trial_configs(spec, trials)  # built (and so validated) once, before anything expensive; shipped to the trials
    no_retry = no_retry_warning(spec.max_failures, sweep_hang_timeouts(spec, configs))
    if no_retry:
        print(f"pathfm sweep: warning: {no_retry}", file=sys.stderr, flush=True)
    sweep_dir = object_store.staging_dir(remote) if remote else storage_root(storage) / spec.name
    if dry_run:
        preflight(spec, trials, step_time=step_time)
        return sweep_dir
    if SweepFolder(sweep_dir).holds_sweep():
        raise SweepError(f"{sweep_dir} already holds a sweep; continue it with `pathfm sweep resume {sweep_dir}` "
                         "or give the spec another name (or another --storage)")
    ensure_writable_dir(sweep_dir.parent, "sweep storage (--storage)")  # before Ray starts

    def start_tuner():
        totals = check_resources(spec, autoscaling=autoscaling)
        concurrency = concurrent_trials(spec.resources, spec.max_concurrent_trials, totals)
        if remote is not None:
            import ray

            ddp_warning = ddp_store_warning(spec.resources.workers, sum(n["Alive"] for n in ray.nodes()))
            if ddp_warning:
                print(f"pathfm sweep: warning: {ddp_warning}", file=sys.stderr, flush=True)
        if autoscaling and spec.max_concurrent_trials is None:
            concurrency = max(concurrency, len(trials))
        _write_sweep_files(sweep_dir, spec, trials)
        if remote is not None and filesystem is None:
            object_store.record_mirror(sweep_dir, remote)
        prepare_tracking(spec.tracking)
        if verbose >= 1:
            print(f"pathfm sweep: '{spec.name}' with {len(trials)} trial(s), up to {concurrency} at once, "
                  f"in {sweep_dir}", file=sys.stderr, flush=True)
        return _build_tuner(spec, sweep_dir, trials, concurrency, verbose, configs=configs, store=remote)

    return _drive(spec, sweep_dir, trials, start_tuner, store=remote, address=address, num_cpus=num_cpus,
                  verbose=verbose)


def resume_sweep(sweep_dir: str | Path, *, address: str | None = None, num_cpus: int | None = None,
                 retry_errored: bool = False, verbose: int = 1, autoscaling: bool = False) -> Path:
    """Continue a sweep whose driver stopped: finished trials are kept, unfinished ones resume from their
    last checkpoint, pending ones start; ``retry_errored`` also retries errored trials. ``sweep_dir`` is the
    sweep folder, its staging folder, or for an object-store sweep its URI (``<--storage URI>/<name>``: staged
    from the store first, e.g. on another machine after the driver's node was lost)."""
    if object_store.is_uri(sweep_dir) and not str(sweep_dir).startswith("file://"):
        sweep_dir = stage_from_store(str(sweep_dir))
    elif object_store.is_uri(sweep_dir):
        sweep_dir = object_store.local_root(sweep_dir)
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    spec_path = SweepFolder(sweep_dir).spec
    if not spec_path.exists():
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}); start one with `pathfm sweep run SPEC`")
    spec = load_spec(spec_path)
    trials = sweep_trials(sweep_dir, spec)
    store = recorded_store(sweep_dir)  # a sweep staged for an object store: its trials sync with it again

    def restore_tuner():
        from ray import tune

        if not tune.Tuner.can_restore(str(sweep_dir)):
            raise SweepError(f"{sweep_dir}: Ray wrote no experiment state yet (the driver died at start-up); "
                             f"remove the folder and run the spec again")
        check_resources(spec, autoscaling=autoscaling)
        return _build_tuner(spec, sweep_dir, trials, 0, verbose, restore=True, resume_errored=retry_errored,
                            store=store)

    def set_aside_lost(results) -> None:
        _set_aside_lost_trials(sweep_dir, {Path(r.path).name for r in results if r.path}, verbose, store)

    return _drive(spec, sweep_dir, trials, restore_tuner, store=store, address=address, num_cpus=num_cpus,
                  verbose=verbose, after_fit=set_aside_lost)


def _drive(spec: SweepSpec, sweep_dir: Path, trials: list[dict], make_tuner: Callable[[], Any], *,
           store: RemoteStorage | None, address: str | None, num_cpus: int | None, verbose: int,
           after_fit: Callable[[Any], None] | None = None) -> Path:
    """What a run and a resumed sweep share once the sweep folder is known: connect to Ray, ``make_tuner()``
    (resource checks, sweep files, the Tuner: new or restored), fit it beside the reference evaluation, record
    the driver's time and ``after_fit(results)``; upload the sweep-level files to the ``store`` when the driver
    stops early, disconnect; then gather the trials other nodes ran, collect ``results.parquet``, report and
    mirror the sweep folder to the store. Returns ``sweep_dir``."""
    started = connect(address, num_cpus=num_cpus, verbose=verbose)
    try:
        tuner = make_tuner()
        t0 = time.time()
        reference = start_reference(spec, sweep_dir, trials, verbose=verbose)  # once per sweep, beside the trials
        # (a no-op for a resumed sweep whose reference rows are there)
        with tune_terminal_output(verbose):
            results = tuner.fit()
        finish_reference(reference)
        _record_driver_time(sweep_dir, time.time() - t0)
        if after_fit is not None:
            after_fit(results)
    except BaseException:
        if store is not None and sweep_dir.is_dir():  # a stopped sweep: its sweep-level files are in the store too
            mirror_sweep(sweep_dir, store)
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    if store is not None:
        gather_trials(sweep_dir, store)  # the trials other nodes ran, for results.parquet
    out = _collect_and_report(sweep_dir, verbose)
    if store is not None:
        mirror_sweep(sweep_dir, store)
        if verbose >= 1:
            print(f"pathfm sweep: mirrored {sweep_dir} to {store.uri}", file=sys.stderr, flush=True)
    return out


def _collect_and_report(sweep_dir: Path, verbose: int) -> Path:
    out = collect(sweep_dir)
    if verbose >= 1:
        print(format_status(sweep_dir), file=sys.stderr)
        print(f"results: {out}", file=sys.stderr)
    return sweep_dir


def _set_aside_lost_trials(sweep_dir: Path, known: set[str], verbose: int, store=None) -> None:
    """Move trial folders that the restored Ray experiment does not know to ``lost_trials/``: a driver that
    died (SIGKILL, crash) after a trial started but before Ray's next experiment snapshot (every >= 10 s)
    loses that trial; Ray re-creates it under a new id (the restored searcher proposes the same point), so
    the orphaned folder would otherwise count twice in results.parquet. On an object-store sweep the folder
    is moved in the store too (else it would be gathered back from there)."""
    lost = SweepFolder(sweep_dir).lost_trials
    for d in SweepFolder(sweep_dir).trial_dirs():
        if d.name not in known:
            lost.mkdir(exist_ok=True)
            os.replace(d, lost / d.name)
            if store is not None:
                set_aside_in_store(store, d.name, f"{LOST_TRIALS_DIR}/{d.name}")
            if verbose >= 1:
                print(f"pathfm sweep: {d.name} was lost with the previous driver (it started after Ray's last "
                      f"experiment snapshot) and ran again as a new trial; moved to {LOST_TRIALS_DIR}/", file=sys.stderr)


def _record_driver_time(sweep_dir: Path, seconds: float) -> None:
    folder = SweepFolder(sweep_dir)
    meta = folder.read_meta()
    meta.setdefault("driver_sessions", []).append({"ended_at": time.time(), "wall_time_s": seconds})
    folder.write_meta(meta)


__all__ = ["SweepError", "check_resources", "client_server_failed_to_start", "collect", "connect", "format_status",
           "preflight", "load_spec", "resume_sweep", "run_sweep", "spec_from_dict", "trial_summary_line"]
