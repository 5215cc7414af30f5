"""One sweep trial = one full training run + evaluation, in its own folder.

Inside a trial (a Ray actor, ``CUDA_VISIBLE_DEVICES`` set by Ray; the Tune entry is
:func:`pathfm.sweeps.tune_entry.sweep_trainable`, the plain-Optuna worker calls :func:`run_trial` too):

1. builds the validated training config of its trial (arm, seed, params);
2. runs :func:`pathfm.ssl.trainer.train` with the trial folder ``<sweep_dir>/trial_<id>`` as ``run_dir``
   (absolute; :mod:`pathfm.records` names the folder and every file in it), resuming from the trial's latest
   checkpoint when Ray restarts or resumes it (so it continues from its step, never from zero);
3. reports every ``report_every`` steps with ``ray.tune.report`` and a small checkpoint folder that
   points at (or, without shared storage, holds a copy of) the trainer's latest checkpoint;
4. on a scheduler stop (ASHA) ends training cleanly and records ``STOPPED``;
5. evaluates the trained teacher (:func:`pathfm.eval.evaluate`) and reports the objective (the baselines
   only with ``eval.baselines``: the sweep evaluates them once, :mod:`pathfm.sweeps.reference`);
6. writes ``trial.json`` (status, params, attempts, error text) next to the checkpoints, so a failed
   trial leaves its error behind and the sweep goes on.

Only ``ray.tune.report / Checkpoint`` are used here (Train V2 rule); ``workers > 1`` trials run this on
every Ray Train worker (:mod:`pathfm.sweeps.distributed`).

Extra trainer callbacks for every trial: ``PATHFM_TRIAL_CALLBACKS=module:function[,module:function...]``
(:func:`extra_trial_callbacks`; e.g. a logger of one's own, or the suite's fault injection).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pathfm.errors import PathfmError, StopTrial
from pathfm.io import checksum_path
from pathfm.records import RunFolder, TrialRecord, update_trial
from pathfm.records.run_folder import TUNE_POINTER_FILE
from pathfm.results import OBJECTIVE_METRIC
from pathfm.sweeps.spec import SweepSpec, check_slides, total_steps, trial_label, validate_trial
from pathfm.tracking import TrackingCallback, log_evaluation


def objective_from_eval(df: Any, tasks: list[str], probes: list[str]) -> dict[str, float]:
    """``eval/mean_balanced_accuracy`` = mean over tasks of the linear-probe balanced accuracy of the trained
    backbone (mean over folds); falls back to the first probe if ``linear`` was not run. Also per-task
    and per-probe means as ``eval/<task>/<probe>/balanced_accuracy``."""
    import polars as pl

    out: dict[str, float] = {}
    if df is None or df.height == 0:
        return out
    trained = df.filter((pl.col("backbone") == "trained") & (pl.col("metric") == "balanced_accuracy"))
    means = trained.group_by(["task", "probe"]).agg(pl.col("value").mean()).sort(["task", "probe"])
    for r in means.iter_rows(named=True):
        out[f"eval/{r['task']}/{r['probe']}/balanced_accuracy"] = float(r["value"])
    head_probe = "linear" if "linear" in probes else probes[0]
    per_task = [out[k] for t in tasks if (k := f"eval/{t}/{head_probe}/balanced_accuracy") in out]
    if per_task:
        out[OBJECTIVE_METRIC] = float(sum(per_task) / len(per_task))
    return out


def numeric_fields(record: dict) -> dict[str, float]:
    """The numeric (int or float, not bool) entries of a metrics record, as floats."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------ the reporter
class TuneReporter:
    """Trainer callback: reports to Tune every ``report_every`` steps, turns a Tune stop into
    ``StopTraining`` and enforces the per-trial time budget."""

    def __init__(self, spec: SweepSpec, trial: dict, run_dir: Path, report: Callable[..., None] | None,
                 copy_checkpoints: bool, start_step: int = 0, stop_file: Path | None = None):
        self.spec, self.trial, self.run_dir, self.report = spec, trial, run_dir, report
        self.stop_file = stop_file
        self.copy_checkpoints = copy_checkpoints
        self.last_report_step = start_step
        self.latest_ckpt: tuple[int, Path] | None = None
        self.reported_ckpt_step: int | None = None
        self.stop_requested = False
        self.budget_stop = False
        self.first_step_wall: float | None = None
        self.t0 = time.time()

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.latest_ckpt = (int(step), Path(path))

    def on_log(self, record: dict) -> None:
        from pathfm.ssl.trainer import StopTraining

        step = int(record.get("step", 0))
        if self.first_step_wall is None:
            self.first_step_wall = time.time()
        if self.report is not None and step - self.last_report_step >= self.spec.report_every:
            self.last_report_step = step
            try:
                self._report(record)
            except (SystemExit, StopTrial):  # Tune/Optuna asked this trial to stop (scheduler)
                self.stop_requested = True
                raise StopTraining from None
        if self.stop_file is not None and self.stop_file.exists():  # a DDP trial's Tune driver says stop
            self.stop_requested = True
            raise StopTraining
        budget = self.spec.budget.trial_time_s
        if budget is not None and time.time() - self.t0 > budget:
            self.budget_stop = True
            raise StopTraining

    def _report(self, record: dict, extra: dict | None = None) -> None:
        metrics = numeric_fields(record)
        metrics.update(extra or {})
        checkpoint = None
        if self.latest_ckpt is not None and self.latest_ckpt[0] != self.reported_ckpt_step:
            checkpoint = self._checkpoint_dir(*self.latest_ckpt)
            self.reported_ckpt_step = self.latest_ckpt[0]
        if checkpoint is None:
            self.report(metrics)
            return
        from ray import tune

        try:
            self.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint))
        finally:
            shutil.rmtree(checkpoint, ignore_errors=True)

    def _checkpoint_dir(self, step: int, path: Path) -> str:
        return pointer_checkpoint_dir(step, path, self.run_dir, copy=self.copy_checkpoints)

    def final(self, record: dict, extra: dict) -> None:
        if self.report is None:
            return
        try:
            self._report(record, extra)
        except SystemExit:
            pass  # stopped at the very last report (e.g. ASHA's max_t): the trial is complete anyway


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint file, or a sharded checkpoint's directory (pathfm.backbone.sharded_checkpoint)."""
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def pointer_checkpoint_dir(step: int, path: Path, run_dir: Path, *, copy: bool = False) -> str:
    """A small temporary folder for ``tune.Checkpoint`` (the caller removes it after reporting): a pointer
    to the trainer's checkpoint (shared storage) or, with ``copy``, a copy of it (when the trial folder is
    not visible to every node)."""
    path = Path(path)
    d = tempfile.mkdtemp(prefix="pathfm_ckpt_")
    pointer = {"step": step, "path": str(path), "run_dir": str(run_dir), "copied": copy}
    if copy:
        copy_checkpoint(path, Path(d) / path.name)
        sidecar = checksum_path(path)
        if sidecar.exists():
            shutil.copy2(sidecar, Path(d) / sidecar.name)
        pointer["file"] = path.name
    Path(d, TUNE_POINTER_FILE).write_text(json.dumps(pointer))
    return d


# ---------------------------------------------------------------------------------- resuming
def resume_point(run_dir: Path, tune_checkpoint: Any) -> tuple[bool | Path, int]:
    """What to resume from: the newest valid checkpoint in the trial folder, else the copy inside Ray's
    checkpoint (no shared storage), else nothing. Returns ``(resume, step)``."""
    from pathfm.backbone import checkpoint as ckpt

    if ckpt.list_checkpoints(run_dir):
        found = ckpt.latest_valid(run_dir)
        if found is not None:
            return found[0], int(found[1]["progress"]["global_step"])
        ckpt.set_aside_unusable(run_dir)  # only unfinished writes of a killed attempt: start afresh (or from Tune's copy)
    if tune_checkpoint is not None:
        with tune_checkpoint.as_directory() as d:
            pointer_path = Path(d) / TUNE_POINTER_FILE
            if pointer_path.exists():
                pointer = json.loads(pointer_path.read_text())
                if pointer.get("file"):
                    target = ckpt.checkpoint_dir(run_dir) / pointer["file"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    copy_checkpoint(Path(d) / pointer["file"], target)
                    sidecar = checksum_path(Path(d) / pointer["file"])
                    if sidecar.exists():
                        shutil.copy2(sidecar, checksum_path(target))
                    return target, int(pointer["step"])
                if Path(pointer["path"]).exists():
                    return Path(pointer["path"]), int(pointer["step"])
    return False, 0


# ---------------------------------------------------------------------------------- one trial
def trial_config(spec: SweepSpec, trial: dict, *, threads: int | None = None, cfg: Any = None):
    """The trial's training Config with the settings a sweep imposes (no progress bars, CPU threads
    = the trial's CPUs, device from the resources). ``cfg``: the Config the driver built for this trial
    (copied, not rebuilt; its slides are checked again here, on the trial's node)."""
    if cfg is None:
        cfg = validate_trial(spec, trial)
    else:
        cfg = cfg.model_copy(deep=True)
        check_slides(spec, cfg, trial_label(trial))
    cfg.run.progress = False
    if cfg.run.threads is None:
        cfg.run.threads = max(1, int(threads if threads is not None else spec.resources.cpu))
    if spec.resources.gpu <= 0:
        cfg.run.device = "cpu"
    if spec.tracking is not None:
        cfg.tracking = spec.tracking.model_copy(update={"group": spec.tracking.group or spec.name})
    return cfg


def run_trial(spec: SweepSpec, trial: dict, run_dir: Path, *, trial_id: str, sweep: str,
              report: Callable[..., None] | None = None, tune_checkpoint: Any = None,
              copy_checkpoints: bool = False, node_id: str | None = None, stop_file: Path | None = None,
              cfg: Any = None, callbacks: Sequence[Any] = ()) -> dict:
    """Train + evaluate one trial in ``run_dir``; returns its final metrics (``cfg``: the trial's Config as the
    driver built it, else built here; ``callbacks``: more trainer callbacks, e.g. the object-store push of
    :mod:`pathfm.infra.sweep_sync`). Raises on failure after recording the error in ``trial.json``."""
    from pathfm.eval.hook import probe_teacher
    from pathfm.ssl.trainer import train

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    prev = TrialRecord.read(run_dir) or TrialRecord()
    if prev.status == "TERMINATED" and RunFolder(run_dir).done.exists():
        return _report_finished(prev, run_dir, report)
    attempt_start = time.time()
    gpus = float(spec.resources.gpu) * int(spec.resources.workers)
    base_info = dict(
        trial_id=trial_id, sweep=sweep, index=trial.get("index"), arm=trial.get("arm"),
        arm_labels=arm_labels(spec, trial.get("arm")), seed=trial.get("seed"),
        params=trial.get("params"), overrides=trial.get("overrides"), status="RUNNING", error=None,
        attempts=int(prev.attempts or 0) + 1,
        started_at=prev.started_at if prev.started_at is not None else attempt_start,
        attempt_started_at=attempt_start, hostname=socket.gethostname(), node_id=node_id, gpus=gpus,
        resources=spec.resources.model_dump(),
    )
    update_trial(run_dir, **base_info)
    prior_wall = float(prev.wall_time_s or 0.0)

    def ended() -> dict[str, float]:
        """End time, wall time over all attempts and GPU-hours, for trial.json."""
        now = time.time()
        wall = prior_wall + now - attempt_start
        return {"ended_at": now, "wall_time_s": wall, "gpu_hours": wall * gpus / 3600}

    reporter: TuneReporter | None = None
    try:
        cfg = trial_config(spec, trial, cfg=cfg)
        total = total_steps(cfg)
        resume, start_step = resume_point(run_dir, tune_checkpoint)
        # seed: the replicate (pairs arms in the analysis); train_seed: cfg.seed (differs with an arm's seed_offset)
        replicate = trial.get("seed") if trial.get("seed") is not None else cfg.seed
        update_trial(run_dir, total_steps=total, seed=replicate, train_seed=cfg.seed,
                     **({"restored_from_step": start_step} if start_step else {}))
        reporter = TuneReporter(spec, trial, run_dir, report, copy_checkpoints, start_step=start_step,
                                stop_file=stop_file)
        trackers = ([TrackingCallback(cfg, run_dir, run_name=f"{sweep}/{trial_id}", tags=trial_tags(sweep, trial_id, trial))]
                    if cfg.tracking.enabled else [])
        watchdog = start_hang_watchdog(cfg.run.hang_timeout_s, run_dir, cfg.run.startup_timeout_s)
        try:
            # the watchdog first: its heartbeat for a step comes before anything else that step's log runs
            result = train(cfg, run_dir, resume=resume, callbacks=[*([watchdog] if watchdog else []),
                                                                   *extra_trial_callbacks(trial, run_dir), reporter,
                                                                   *trackers, *callbacks],
                           probe=probe_teacher)
        finally:
            if watchdog is not None:
                watchdog.stop()
        last = result.metrics or {}
        import torch

        common = dict(final_step=result.final_step, tiles_seen=last.get("tiles_seen"), torch_threads=torch.get_num_threads(),
                      train_time_s=last.get("time_s"),
                      first_step_latency_s=(reporter.first_step_wall - attempt_start) if reporter.first_step_wall else None)
        if reporter.stop_requested:
            update_trial(run_dir, status="STOPPED", stopped_by="scheduler", **ended(), **common)
            return numeric_fields(last)
        if result.stop_reason is not None:  # a run.guards guard (collapsed / diverged / probe_dropped): no eval
            from pathfm.ssl.guards import read_guard_trip

            update_trial(run_dir, status="STOPPED", stopped_by="guard", stop_reason=result.stop_reason,
                         guard=read_guard_trip(run_dir), **ended(), **common)
            # without the objective: Tune's Optuna searcher records the trial as PRUNED, ASHA sees it end
            reporter.final(last, {f"guard/{result.stop_reason}": 1.0, "done_step": float(result.final_step)})
            return numeric_fields(last)
        objective: dict[str, float] = {}
        if spec.eval.enabled:
            objective = evaluate_trial(spec, run_dir, result.final_step)
        if spec.objective.in_training and isinstance(last.get(spec.objective.metric), (int, float)):
            objective[spec.objective.metric] = float(last[spec.objective.metric])
        if cfg.tracking.enabled:
            log_evaluation(cfg, run_dir, final_eval_rows(run_dir, result.final_step), extra=objective,
                           step=result.final_step, tags=trial_tags(sweep, trial_id, trial))
        update_trial(run_dir, status="TERMINATED", objective=objective,
                     stopped_by="trial_time_s" if reporter.budget_stop else None, **ended(), **common)
        final = dict(numeric_fields(last), **objective, done_step=float(result.final_step))
        reporter.final(last, dict(objective, done_step=float(result.final_step)))
        return final
    except BaseException as e:
        if isinstance(e, SystemExit) or (reporter is not None and reporter.stop_requested):
            update_trial(run_dir, status="STOPPED", stopped_by="scheduler", **ended())
            raise
        update_trial(run_dir, status="ERROR", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                     **ended())
        raise


TRIAL_CALLBACKS_ENV = "PATHFM_TRIAL_CALLBACKS"


def extra_trial_callbacks(trial: dict, run_dir: Path, environ: Mapping[str, str] = os.environ) -> list[Any]:
    """The trainer callbacks that ``$PATHFM_TRIAL_CALLBACKS`` adds to a trial attempt: a comma-separated list of
    ``module:function``; each function is called as ``function(trial, run_dir)`` when the attempt starts (``trial``:
    the trial's ``params``, ``arm``, ``seed``, ``index``...; ``run_dir``: its folder) and returns the callbacks
    (objects with optional ``on_log`` / ``on_checkpoint`` / ``on_end``, :func:`pathfm.ssl.trainer.train`) to run
    after the hang watchdog's heartbeat and before pathfm's other callbacks; ``[]`` when unset. The module must
    be importable where the trial runs: Ray's worker processes inherit the environment
    (``PATHFM_TRIAL_CALLBACKS`` and ``PYTHONPATH``) of the process that starts a local Ray; on a cluster give
    it to ``ray start`` or the job's ``runtime_env``. An entry that cannot be imported fails the trial with a
    PathfmError naming it."""
    out: list[Any] = []
    for entry in filter(None, (e.strip() for e in environ.get(TRIAL_CALLBACKS_ENV, "").split(","))):
        module_name, _, function_name = entry.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise PathfmError(f"{TRIAL_CALLBACKS_ENV}: cannot load '{entry}' ({type(e).__name__}: {e}); give "
                              "module:function with the module importable in the trial's process (PYTHONPATH)") from None
        out.extend(factory(trial, run_dir))
    return out


def start_hang_watchdog(timeout_s: float | None, run_dir: Path, startup_timeout_s: float | None = None):
    """A started :class:`pathfm.infra.hang.HangWatchdog` that records a hang in ``trial.json`` before it
    kills the trial process (None when ``run.hang_timeout_s`` is off); it watches start-up too
    (``run.startup_timeout_s``, :func:`pathfm.infra.hang.startup_allowance`)."""
    if timeout_s is None:
        return None
    from pathfm.infra.hang import HangWatchdog, startup_allowance

    def record(message: str) -> None:
        hangs = int((TrialRecord.read(run_dir) or TrialRecord()).hangs or 0) + 1
        update_trial(run_dir, hangs=hangs, last_hang=message, error=f"Hang: {message}")

    return HangWatchdog(timeout_s, on_hang=record, startup_s=startup_allowance(timeout_s, startup_timeout_s)).start()


def arm_labels(spec: SweepSpec, arm: str | None) -> dict[str, Any]:
    """The labels of the trial's arm (``{}`` without arms or labels)."""
    return next((dict(a.labels) for a in spec.arms or [] if a.name == arm), {})


def trial_tags(sweep: str, trial_id: str, trial: dict) -> dict[str, str]:
    """Tags of a trial's tracked run: sweep, trial, arm, replicate seed."""
    return {"sweep": sweep, "trial": trial_id, "arm": str(trial.get("arm")), "seed": str(trial.get("seed"))}


def final_eval_rows(run_dir: Path, final_step: int):
    """The rows of ``eval.parquet`` for the final step (None without an evaluation)."""
    import polars as pl

    path = RunFolder(run_dir).eval
    return pl.read_parquet(path).filter(pl.col("step") == final_step) if path.exists() else None


def _report_finished(info: TrialRecord, run_dir: Path, report: Callable[..., None] | None) -> dict:
    """A trial that finished before the driver heard of it (driver killed in between): report its final
    metrics again; nothing is retrained or re-evaluated and trial.json stays as it was."""
    from pathfm.io import read_jsonl

    recs = read_jsonl(RunFolder(run_dir).metrics)
    final = dict(numeric_fields(recs[-1]) if recs else {}, **(info.objective or {}), done_step=float(info.final_step or 0))
    if report is not None:
        try:
            report(final)
        except SystemExit:
            pass
    return final


def evaluate_trial(spec: SweepSpec, run_dir: Path, final_step: int) -> dict[str, float]:
    """Run the end-of-trial evaluation once per final checkpoint (rows already in eval.parquet for this
    step are reused, so a resumed trial never evaluates twice) and return the objective metrics."""
    import polars as pl

    from pathfm.eval import evaluate

    path = RunFolder(run_dir).eval
    df = None
    if path.exists():
        old = pl.read_parquet(path)
        old = old.filter((pl.col("step") == final_step) & pl.col("task").is_in(spec.eval.tasks))
        if set(old["task"].unique().to_list()) == set(spec.eval.tasks):
            df = old
    if df is None:
        kwargs: dict[str, Any] = {}
        if spec.eval.n_folds is not None:
            kwargs["n_folds"] = spec.eval.n_folds
        device = "cpu" if spec.resources.gpu <= 0 else "auto"
        df = evaluate(str(run_dir), tasks=list(spec.eval.tasks), probes=list(spec.eval.probes),
                      seeds=list(spec.eval.probe_seeds), baselines=spec.eval.baselines, progress=False, verbose=False, device=device, **kwargs)
    return objective_from_eval(df, list(spec.eval.tasks), list(spec.eval.probes))
