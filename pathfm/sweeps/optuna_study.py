"""``pathfm sweep optuna SPEC``: a plain Optuna study (no Ray) on an RDB storage, with pruning.

For users without Ray: each worker process (``--workers N`` here, or the same command started on
other hosts against a shared PostgreSQL/MySQL URL) loads the study and runs trials; every trial is
the same train + evaluate as a Ray trial and writes the same trial folder
(``<sweep_dir>/optuna_<number>/``), so ``pathfm sweep collect`` and the analysis work unchanged.

* Storage: ``sqlite:///<sweep_dir>/optuna.db`` by default (one host); ``journal:///PATH`` for Optuna's
  file-locked JournalStorage (no server; shared filesystems); any SQLAlchemy URL otherwise
  (:mod:`pathfm.infra.optuna_storage`). SQLite on a network filesystem with more than one worker is refused
  with the fix, and so is a storage that cannot be opened or written (a damaged file, a folder that cannot be
  created; :func:`pathfm.infra.optuna_storage.open_checked`), before any trial. The study is created once by the
  launcher before workers start (avoids SQLite's schema race).
* Sampler: TPE seeded with ``search.seed``, the worker index and the number of trials already in the
  study (so workers, and a run that continues a study, do not replay the same random start points).
* Pruning: ``scheduler.type: asha`` -> ``SuccessiveHalvingPruner`` on the scheduler metric reported
  every ``report_every`` steps (``trial.report``; sign-flipped when its direction differs from the
  objective's, since Optuna pruners follow the study direction); never at the trial's last step, so a trial
  that trained every step gets its final evaluation; otherwise no pruning.
* Budget: the study's TOTAL is ``--n-trials`` (default ``search.num_samples``). Running the command
  again continues the same study up to that total, never ``+N`` more. Counted (:func:`budget`):
  COMPLETE and PRUNED trials, FAIL trials that were not retried (a trial that raised is a result: it is
  not run again), and RUNNING/WAITING trials (in progress elsewhere, or queued retries). A FAIL trial
  that was retried is not counted; its retry is, so it uses one unit of budget, not two. Workers that
  run in parallel hold a file lock (``budget.lock`` in the sweep folder) from the budget check until
  their new trial exists in the storage, so two of them never both take the last unit.
* Spec: a study keeps the spec it was created from (the study's user attribute ``pathfm_spec``, the folder's
  ``sweep_spec.yaml``); running it with a changed spec is refused, saying how to fork it (a new ``name:``), as
  ``pathfm sweep run`` refuses a folder that holds a sweep. Only :data:`MAY_CHANGE` (the total, resources, ...)
  may differ. A spec whose search space has nothing to choose is refused before any trial.
* Dead workers: trials send a heartbeat every ``heartbeat_s`` seconds. A trial whose worker was killed
  (SIGKILL, OOM, node lost) stays RUNNING until ``grace`` seconds without heartbeat
  (:func:`pathfm.infra.optuna_storage.heartbeat_grace`: ``2 x heartbeat_s``, or more when this sweep's finished
  trials measured longer pauses; a journal storage has no heartbeats: there, ``grace`` (at least 600) seconds
  without a write in the trial's folder, :func:`pathfm.infra.optuna_storage.dead_after`); the next trial
  start of any worker then marks it FAIL and Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a
  retry (up to ``max_retry`` times) with the same parameters. A trial interrupted by Ctrl-C/SIGTERM is
  marked FAIL and queued for retry at once. A retry runs in the original trial's folder, so it resumes
  from that trial's last checkpoint. The launcher returns once the budget is reached and no trial is
  RUNNING (it waits for other workers' trials and for dead workers' trials to go stale).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from pathfm.errors import PathfmError, StopTrial, SweepError
from pathfm.infra.optuna_storage import (check_storage, dead_after, journal_path, journal_storage, longest_pause,
                                         open_checked, storage_error)
from pathfm.records import SweepFolder, TrialRecord, optuna_trial_dirname, optuna_trial_number, update_trial
from pathfm.sweeps.spec import (SweepSpec, check_search_space, expand_trials, load_spec, optuna_categories,
                               total_steps, trial_from_sample)


TRIAL_DIR_ATTR = "trial_dir"  # user attribute naming a trial's folder; copied to its retries
SPEC_ATTR = "pathfm_spec"  # study user attribute: the spec the study was created from (study_identity)
# what a run continuing a study may change in its spec (the budget and where/how trials run); anything else
# (base, overrides, space, arms, seeds, objective, search, scheduler, eval, ...) changes what the trials mean
MAY_CHANGE = ("search.num_samples", "resources", "max_concurrent_trials", "max_failures", "budget", "tracking", "meta")


def _storage(url: str, heartbeat_s: int | None = None, max_retry: int | None = None, grace_s: int | None = None):
    """The study's storage: a file-locked journal for ``journal:///`` URLs, else an RDB storage; with
    ``heartbeat_s``, dead workers' trials are failed after ``grace_s`` (default ``2 x heartbeat_s``) without
    heartbeat and retried up to ``max_retry`` times (None: without limit)."""
    import warnings

    import optuna

    if (journal := journal_path(url)) is not None:
        return journal_storage(journal)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if heartbeat_s is not None:
        kwargs.update(heartbeat_interval=int(heartbeat_s), grace_period=grace_s or 2 * int(heartbeat_s),
                      heartbeat_stale_trial_callback=_retry_callback(max_retry))
    with warnings.catch_warnings():  # Optuna still flags its heartbeat arguments as experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


def _retry_callback(max_retry: int | None):
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)


def budget(study) -> dict[str, int]:
    """How much of the study's trial budget is used (see the module docstring): ``finished`` (COMPLETE,
    PRUNED, FAIL not retried), ``running``, ``waiting`` (queued retries), ``retried`` (FAIL trials replaced
    by a retry, not counted) and ``used`` = finished + running + waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    out = {"finished": 0, "running": 0, "waiting": 0, "retried": 0}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            out["finished"] += 1
        elif t.state == TrialState.FAIL:
            out["retried" if t.number in retried else "finished"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    out["used"] = out["finished"] + out["running"] + out["waiting"]
    return out


def _pruner(spec: SweepSpec):
    import optuna

    if spec.scheduler.type != "asha":
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.scheduler.grace_period * spec.report_every,
                                                  reduction_factor=spec.scheduler.reduction_factor)


def suggest(trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample one point of the spec's space (plus arm/seed categories) with an Optuna trial."""
    out: dict[str, Any] = {name: d.suggest(trial, name) for name, d in spec.space.items()}
    for name, values in optuna_categories(spec).items():
        out[name] = trial.suggest_categorical(name, values)
    return out


def make_objective(spec: SweepSpec, sweep_dir: Path, current: dict | None = None):
    """The Optuna objective: train + evaluate one trial in ``sweep_dir/optuna_<number>`` (a retry: in the
    folder of the trial it retries, resuming from its checkpoint). ``current["number"]`` is set to the
    running trial's number."""
    from pathfm.sweeps.trainable import run_trial, trial_config

    metric, mode = spec.scheduler_metric()
    sign = 1.0 if mode == spec.objective.mode else -1.0

    def objective(trial) -> float:
        import optuna

        if current is not None:
            current["number"] = trial.number
        trial_id = trial.user_attrs.get(TRIAL_DIR_ATTR)  # set: a retry (of a dead or interrupted trial)
        if trial_id is None:
            trial_id = optuna_trial_dirname(trial.number)
            trial.set_user_attr(TRIAL_DIR_ATTR, trial_id)
        sample = suggest(trial, spec)
        t = trial_from_sample(spec, optuna_trial_number(trial_id), sample)
        last_step = total_steps(trial_config(spec, t))
        reported: set[int] = set()

        def report(metrics: dict, checkpoint: Any = None) -> None:
            if metric in metrics and "step" in metrics and int(metrics["step"]) not in reported:
                step = int(metrics["step"])
                reported.add(step)
                trial.report(sign * float(metrics[metric]), step=step)
                # a trial that trained every step is not pruned at its last report: it gets its final evaluation
                if step < last_step and trial.should_prune():
                    raise StopTrial

        final = run_trial(spec, t, sweep_dir / trial_id, trial_id=trial_id, sweep=spec.name, report=report)
        info = TrialRecord.read(sweep_dir / trial_id) or TrialRecord()
        if info.status == "STOPPED":
            if info.stop_reason:  # a run.guards guard stopped it: collapsed / diverged / probe_dropped
                trial.set_user_attr("stop_reason", info.stop_reason)
            raise optuna.TrialPruned()
        if spec.objective.metric not in final:
            raise PathfmError(f"trial {trial_id} finished without the objective '{spec.objective.metric}' "
                              "(is eval.enabled false? use an in-training objective such as 'loss')")
        return float(final[spec.objective.metric])

    return objective


def _worker(spec_yaml: str, sweep_dir: str, storage_url: str, total: int, grace_s: int, worker: int,
            heartbeat_s: int, max_retry: int | None) -> None:
    """Run trials until the study's budget is used and no trial is left RUNNING (see the module docstring)."""
    import numpy as np
    import optuna
    import yaml

    from pathfm.sweeps.spec import spec_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = spec_from_dict(yaml.safe_load(spec_yaml))
    storage = _storage(storage_url, heartbeat_s, max_retry, grace_s)
    n_before = len(optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([spec.search.seed, worker, n_before]).generate_state(1)[0])
    study = optuna.load_study(study_name=spec.name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(spec))
    current: dict[str, int] = {}
    objective = make_objective(spec, Path(sweep_dir), current)
    callbacks = [_print_trial(spec.name, Path(sweep_dir))]
    budget_lock = FileLock(str(SweepFolder(sweep_dir).budget_lock))  # held from a budget check until the new trial exists

    def claimed(trial):  # the trial now exists (RUNNING): other workers count it, so the lock can go
        if budget_lock.is_locked:
            budget_lock.release()
        return objective(trial)

    said_waiting = False
    while True:
        fail_dead_trials(study, storage, Path(sweep_dir), grace_s, max_retry)
        budget_lock.acquire()
        b = budget(study)
        if b["waiting"] or b["used"] < total:
            current.clear()
            try:
                study.optimize(claimed, n_trials=1, catch=(Exception,), callbacks=callbacks)
            except KeyboardInterrupt:
                _retry_interrupted(study, current.get("number"), max_retry)
                raise
            finally:
                if budget_lock.is_locked:
                    budget_lock.release()
            said_waiting = False
            continue
        budget_lock.release()
        if b["running"]:
            if not said_waiting:
                print(f"pathfm sweep optuna: budget of {total} trial(s) in use; waiting for {b['running']} running "
                      f"trial(s) (other workers; a dead worker's trial is retried after {grace_s} s without "
                      "heartbeat)", file=sys.stderr, flush=True)
                said_waiting = True
            time.sleep(min(heartbeat_s, 10))
        else:
            return


def fail_dead_trials(study, storage, sweep_dir: Path, grace_s: int, max_retry: int | None) -> None:
    """Fail (and queue the retry of) trials whose worker died: by heartbeat on RDB storages, by a trial
    folder without any write for ``grace_s`` seconds on a journal (which has no heartbeats)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    if not isinstance(storage, optuna.storages.JournalStorage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return
    now = time.time()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        folder = sweep_dir / t.user_attrs.get(TRIAL_DIR_ATTR, optuna_trial_dirname(t.number))
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        last = max([p.stat().st_mtime for p in files], default=t.datetime_start.timestamp() if t.datetime_start else now)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if now - last > grace_s and storage.set_trial_state_values(trial_id, TrialState.FAIL):
            _retry_interrupted(study, t.number, max_retry)


def _retry_interrupted(study, number: int | None, max_retry: int | None) -> None:
    """Ctrl-C/SIGTERM stopped a trial (Optuna marked it FAIL): queue its retry now, as for a dead worker."""
    from optuna.trial import TrialState

    if number is None:
        return
    frozen = next((t for t in study.get_trials(deepcopy=True) if t.number == number), None)
    if frozen is not None and frozen.state == TrialState.FAIL:
        _retry_callback(max_retry)(study, frozen)


def _print_trial(name: str, sweep_dir: Path):
    from pathfm.sweeps.status import trial_summary_line

    def cb(study, frozen) -> None:
        folder = frozen.user_attrs.get(TRIAL_DIR_ATTR, optuna_trial_dirname(frozen.number))
        info = TrialRecord.read(sweep_dir / folder) or TrialRecord(trial_id=str(frozen.number), status=frozen.state.name)
        print(trial_summary_line(name, info), file=sys.stderr, flush=True)

    return cb


def _close_dead_trial_folders(study, sweep_dir: Path) -> None:
    """A trial folder still saying RUNNING whose Optuna trial FAILed and is not being retried (its worker
    died and the retries are used up) gets status ERROR, so the results do not show it as running."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    live = {t.user_attrs.get(TRIAL_DIR_ATTR) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
    for t in trials:
        folder = t.user_attrs.get(TRIAL_DIR_ATTR)
        if t.state != TrialState.FAIL or folder is None or folder in live:
            continue
        info = TrialRecord.read(sweep_dir / folder)
        if info is not None and info.status == "RUNNING":
            update_trial(sweep_dir / folder, status="ERROR",
                              error=f"worker lost (Optuna trial {t.number} failed: no heartbeat), retries used up")


def study_identity(spec: SweepSpec) -> dict[str, Any]:
    """The part of a spec that a study keeps for its life (everything but :data:`MAY_CHANGE`)."""
    d = spec.model_dump(mode="json")
    for key in MAY_CHANGE:
        head, _, tail = key.partition(".")
        if tail:
            d.get(head, {}).pop(tail, None)
        else:
            d.pop(head, None)
    return d


def check_same_spec(spec: SweepSpec, recorded: dict[str, Any], where: str) -> None:
    """A SweepError when ``recorded`` (a study identity) is not ``spec``'s: a study continues only with the spec
    it started with, as ``pathfm sweep run`` refuses a folder that holds a sweep; the message says how to fork."""
    from pathfm.tracking import flatten_params

    old, new = flatten_params(recorded), flatten_params(study_identity(spec))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not differ:
        return
    listed = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
    raise SweepError(
        f"study '{spec.name}' ({where}) was created from another spec (differs in {listed}); a study continues only "
        f"with its own spec ({', '.join(MAY_CHANGE)} may change). To fork it, give the spec another `name:` "
        f"(e.g. name: {spec.name}-2): a new study and folder on the same storage; without --storage, another --dir "
        "also starts afresh")


def run_optuna_study(spec: SweepSpec | str | Path, *, storage: str | None = None, root: str | Path = "runs/sweeps",
                     n_trials: int | None = None, workers: int = 1, heartbeat_s: int = 60,
                     max_retry: int | None = 2) -> Path:
    """Run (or continue) a plain Optuna study up to ``n_trials`` trials in total (default
    ``search.num_samples``); returns the sweep folder (results.parquet collected). ``heartbeat_s`` and
    ``max_retry`` (None: unlimited) govern the retry of trials whose worker died (module docstring)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from pathfm.io import redact_url
    from pathfm.records import sweep_meta
    from pathfm.sweeps.collect import collect
    from pathfm.sweeps.status import format_status

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if workers < 1:
        raise PathfmError(f"--workers must be >= 1, got {workers}")
    if heartbeat_s < 1:
        raise PathfmError(f"--heartbeat must be >= 1 second, got {heartbeat_s}")
    if max_retry is not None and max_retry < 0:
        raise PathfmError(f"--max-retry must be >= 0, got {max_retry}")
    if n_trials is not None and n_trials < 1:
        raise PathfmError(f"--n-trials must be >= 1, got {n_trials}")
    if spec.resources.workers > 1:
        raise PathfmError("resources.workers > 1 (DDP trials) needs Ray: use `pathfm sweep run`")
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"algorithm": "optuna"})})
    check_search_space(spec)  # nothing to search: every trial would be the same
    expand_trials(spec)  # validates the configs at every bound before any work
    sweep_dir = Path(root).expanduser().resolve() / spec.name
    folder = SweepFolder(sweep_dir)
    if folder.spec.is_file():  # this folder's study: only with its own spec
        check_same_spec(spec, study_identity(load_spec(folder.spec)), f"folder {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{folder.optuna_db}"
    check_storage(url, workers)  # SQLite on NFS/Lustre/... with several writers: refused before any work
    open_checked(url, _storage)  # a damaged file or an unwritable folder: one line with the fix, before any work
    grace_s = dead_after(heartbeat_s, longest_pause([info.to_dict() for _, info in folder.trials()]), url)
    total = n_trials if n_trials is not None else spec.search.num_samples
    # create the study (and its schema) once, before any worker touches the storage
    study_storage = _storage(url, heartbeat_s, max_retry, grace_s)
    try:
        study = optuna.create_study(study_name=spec.name, storage=study_storage, load_if_exists=True,
                                    direction="maximize" if spec.objective.mode == "max" else "minimize",
                                    sampler=optuna.samplers.TPESampler(seed=spec.search.seed), pruner=_pruner(spec))
    except (SQLAlchemyError, OSError) as e:  # e.g. an existing SQLite file on a read-only file system
        raise storage_error(url, e) from None
    if SPEC_ATTR in study.user_attrs:  # the storage's study (shared storages: whatever folder it was run from)
        check_same_spec(spec, study.user_attrs[SPEC_ATTR], f"in {redact_url(url)}")
    else:  # a new study, or one from before studies recorded their spec
        study.set_user_attr(SPEC_ATTR, study_identity(spec))
    folder.write_spec(spec)
    meta = sweep_meta(spec, [])
    meta.update(algorithm="optuna-plain", n_trials=total, optuna_storage=redact_url(url))
    folder.write_meta(meta)
    fail_dead_trials(study, study_storage, sweep_dir, grace_s, max_retry)
    b = budget(study)
    todo = max(0, total - b["used"]) + b["waiting"]
    n_procs = min(workers, todo) if todo else (1 if b["running"] else 0)
    print(f"pathfm sweep optuna: study '{spec.name}' on {redact_url(url)}: {b['finished']} of {total} trial(s) "
          f"finished, {b['running']} running, {todo} to run over {n_procs} worker(s); trial folders in {sweep_dir}; "
          f"a trial silent for {grace_s} s counts as dead", file=sys.stderr, flush=True)
    spec_yaml = spec.to_yaml()
    args = (spec_yaml, str(sweep_dir), url, total, grace_s)
    if n_procs == 1:
        _worker(*args, 0, heartbeat_s, max_retry)
    elif n_procs > 1:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(*args, i, heartbeat_s, max_retry), daemon=False)
                 for i in range(n_procs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise PathfmError(f"{len(bad)} Optuna worker process(es) exited with codes {bad}; see the log above")
    _close_dead_trial_folders(study, sweep_dir)
    from pathfm.sweeps.reference import ensure_reference

    ensure_reference(spec, sweep_dir, [])  # the baselines once per sweep (no-op when done or cached)
    out = collect(sweep_dir)
    print(format_status(sweep_dir), file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    return sweep_dir
