"""Experiment tracking: a run logged to MLflow, Weights & Biases and/or TensorBoard (``cfg.tracking``).

What a tracked run holds, the same in every backend:

- parameters: every config knob, flattened to dotted keys (``loss.kde_weight``), plus tags (sweep, arm,
  seed, trial) when the run is a sweep trial;
- metrics per logged step: every number of a ``metrics.jsonl`` record (loss parts ``loss/*``, schedules
  ``lr``/``wd``/``momentum``/``teacher_temp``, throughput, tile counts, ``diag/*``, ``grad_norm/*`` and
  the in-training probe ``probe/*``);
- the final evaluation table (``eval.parquet`` rows: trained backbone beside the baselines) as a table
  plus one summary metric per (backbone, task, probe, metric) as ``eval/<backbone>/<task>/<probe>/<metric>``;
- artifacts: ``config.yaml``, ``metrics.jsonl``, the exported ``teacher_backbone.pt`` and the evaluation
  table.

The backend run ids are kept in ``<run_dir>/tracking.json``, so a resumed run, and an evaluation logged
later (``pathfm eval RUN_DIR``), continue the same tracked run. Logging happens on rank 0 only (the trainer
calls its callbacks there). Each backend is an optional extra: ``pip install 'pathfm[mlflow]'`` /
``'pathfm[wandb]'``; TensorBoard uses tensorboardX (installed with Ray Tune).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from pathfm.errors import ConfigError
from pathfm.records import RunFolder

#: MLflow accepts at most 100 parameters per log_batch call
MLFLOW_PARAMS_PER_BATCH = 100


def flatten_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"loss": {"kde_weight": 0.1}}`` -> ``{"loss.kde_weight": "0.1"}``; lists and None as their JSON."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def numeric_metrics(record: dict) -> dict[str, float]:
    """The finite numbers of a record (``step`` and strings such as ``stage`` left out)."""
    out = {}
    for k, v in record.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


def evaluation_summary(df) -> dict[str, float]:
    """``eval/<backbone>/<task>/<probe>/<metric>``: mean over folds and seeds of an evaluation table."""
    import polars as pl

    if df is None or df.height == 0:
        return {}
    means = df.group_by(["backbone", "task", "probe", "metric"]).agg(pl.col("value").mean()).sort(
        ["backbone", "task", "probe", "metric"])
    return {f"eval/{r['backbone']}/{r['task']}/{r['probe']}/{r['metric']}": float(r["value"])
            for r in means.iter_rows(named=True)}


def read_run_ids(run_dir: Path) -> dict[str, str]:
    path = RunFolder(run_dir).tracking
    return json.loads(path.read_text()) if path.exists() else {}


def write_run_ids(run_dir: Path, ids: dict[str, str]) -> None:
    from pathfm.io import atomic_write_text

    atomic_write_text(RunFolder(run_dir).tracking, json.dumps(ids, indent=1) + "\n")


def _missing(extra: str, package: str) -> ConfigError:
    return ConfigError(f"tracking.{extra} is set but {package} is not installed: pip install 'pathfm[{extra}]' "
                       f"(or remove tracking.{extra} from the config)")


# ------------------------------------------------------------------------------------------ backends
class MlflowRun:
    """One MLflow run through ``MlflowClient`` (no global state: several runs may live in one process)."""

    name = "mlflow"

    def __init__(self, cfg, run_dir: Path, run_name: str, tags: dict[str, str], run_id: str | None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        exp_id = self.experiment_id(self.client, cfg)
        if run_id is None:
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
            self.logged_params: set[str] = set()
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.logged_params = set(self.client.get_run(run_id).data.params)

    @classmethod
    def experiment_id(cls, client, cfg) -> str:
        """The id of ``cfg.experiment``, created if missing (by another process at the same time: fine)."""
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(cfg.experiment, artifact_location=cls._artifacts(cfg))
        except MlflowException:
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    @staticmethod
    def _artifacts(cfg) -> str | None:
        if cfg.artifact_location or not (cfg.tracking_uri or "").startswith("sqlite:///"):
            return cfg.artifact_location
        db = Path(cfg.tracking_uri.removeprefix("sqlite:///"))  # sqlite:////abs or sqlite:///rel
        return (db.parent / "mlartifacts").resolve().as_uri()

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        # parameters are immutable in MLflow: a resumed run adds only the new ones
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in self.logged_params]
        for i in range(0, len(new), MLFLOW_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[i:i + MLFLOW_PARAMS_PER_BATCH])
        self.logged_params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_table(self, name: str, df) -> None:
        self.client.log_table(self.run_id, df.to_pandas(), f"{name}.json")

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "finished" else "KILLED")


class WandbRun:
    """One W&B run (``mode: offline`` writes it under ``<run_dir>/wandb`` for a later ``wandb sync``)."""

    name = "wandb"

    def __init__(self, cfg, run_dir: Path, run_name: str, tags: dict[str, str], run_id: str | None, group: str | None):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir), name=run_name, group=group,
            id=run_id or uuid.uuid4().hex[:12], resume="allow", tags=[f"{k}={v}" for k, v in tags.items()],
            reinit="create_new", settings=wandb.Settings(console="off", silent=True),
        )
        self.run_id = self.run.id

    def log_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_table(self, name: str, df) -> None:
        self.run.log({name: self.wandb.Table(columns=list(df.columns), data=[list(r) for r in df.rows()])})

    def log_artifact(self, path: Path) -> None:
        kind = "model" if path.suffix == ".pt" else "run-file"
        name = re.sub(r"[^A-Za-z0-9._-]", "-", f"{self.run.id}-{path.stem}")
        art = self.wandb.Artifact(name, type=kind)
        art.add_file(str(path))
        self.run.log_artifact(art)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


class TensorboardRun:
    """Scalars and text in TensorBoard event files (tensorboardX); artifacts are listed as text.

    Each writer gets a file of its own: tensorboardX names the file by the second and the host only and
    opens it with 'wb', so the evaluation logged just after training (or a second process writing to a
    shared ``log_dir``) truncated the training's file when both opened in the same second; the suffix (pid
    and a random token) keeps them apart. The writer queues events to a background thread: ``finish``
    closes it, which drains the queue, flushes and closes the file before the run is reported done."""

    name = "tensorboard"

    def __init__(self, cfg, run_dir: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboardX") from None
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.writer = SummaryWriter(cfg.log_dir or str(RunFolder(run_dir).tensorboard), filename_suffix=suffix)
        self.run_id = self.writer.logdir

    def log_params(self, params: dict[str, str]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("params", "| knob | value |\n|---|---|\n" + rows)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_table(self, name: str, df) -> None:
        head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
        self.writer.add_text(name, head + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in df.rows()))

    def log_artifact(self, path: Path) -> None:
        self.writer.add_text("artifacts", str(Path(path).resolve()))

    def finish(self, status: str) -> None:
        self.writer.close()


def open_runs(tracking, run_dir: Path, run_name: str, tags: dict[str, str] | None = None) -> list:
    """Start (or continue, by the ids in ``tracking.json``) one run per configured backend."""
    run_dir = Path(run_dir)
    ids = read_run_ids(run_dir)
    tags = dict(tags or {})
    if tracking.group:
        tags.setdefault("group", tracking.group)
    runs: list = []
    if tracking.mlflow is not None:
        runs.append(MlflowRun(tracking.mlflow, run_dir, run_name, tags, ids.get("mlflow")))
    if tracking.wandb is not None:
        runs.append(WandbRun(tracking.wandb, run_dir, run_name, tags, ids.get("wandb"), tracking.group))
    if tracking.tensorboard is not None:
        runs.append(TensorboardRun(tracking.tensorboard, run_dir))
    new = {r.name: r.run_id for r in runs}
    if new != {k: ids.get(k) for k in new}:
        write_run_ids(run_dir, {**ids, **new})
    return runs


def check_installed(tracking) -> None:
    """ConfigError naming the extra to install for each configured backend whose package is missing, or an
    ``MLFLOW_TRACKING_URI`` naming MLflow's read-only file store (see :func:`pathfm.config.file_store_uri`)."""
    import importlib.util

    for section, module, package in (("mlflow", "mlflow", "mlflow"), ("wandb", "wandb", "wandb"),
                                     ("tensorboard", "tensorboardX", "tensorboardX")):
        if getattr(tracking, section) is not None and importlib.util.find_spec(module) is None:
            raise _missing(section, package)
    if tracking.mlflow is not None and not tracking.mlflow.tracking_uri:
        from pathfm.config import file_store_uri

        why = file_store_uri(os.environ.get("MLFLOW_TRACKING_URI"))
        if why:
            raise ConfigError(f"MLFLOW_TRACKING_URI={why}")


def prepare_tracking(tracking) -> None:
    """Before a sweep starts its trials: create the MLflow experiment (and a new SQLite store's tables)
    once, so that concurrent trials do not race to create them."""
    if tracking is not None and tracking.mlflow is not None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        MlflowRun.experiment_id(MlflowClient(tracking_uri=tracking.mlflow.tracking_uri), tracking.mlflow)


def recipe_params(cfg) -> dict[str, str]:
    """Every knob of the config (the ``tracking`` section itself left out)."""
    tree = cfg.model_dump(mode="json")
    tree.pop("tracking", None)
    return flatten_params(tree)


class TrackingCallback:
    """Trainer callback: checks the backends' packages when created (before any training), starts the
    tracked run(s) at the first logged step, logs each record, and at the end of training logs the run's
    files as artifacts and closes the run(s)."""

    def __init__(self, cfg, run_dir: Path, run_name: str | None = None, tags: dict[str, str] | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_name = run_name or self.run_dir.name
        self.tags = tags or {}
        self.runs: list | None = None
        check_installed(cfg.tracking)

    def start(self) -> None:
        if self.runs is None:
            self.runs = open_runs(self.cfg.tracking, self.run_dir, self.run_name, self.tags)
            params = recipe_params(self.cfg)
            for r in self.runs:
                r.log_params(params)

    def on_log(self, record: dict) -> None:
        self.start()
        metrics = numeric_metrics(record)
        for r in self.runs:
            r.log_metrics(metrics, int(record["step"]))

    def on_end(self, result) -> None:
        self.start()
        for r in self.runs:
            for path in RunFolder(self.run_dir).artifacts:
                if path.exists():
                    r.log_artifact(path)
            r.finish("stopped" if result.stopped_early else "finished")
        self.runs = None


def log_evaluation(cfg, run_dir: Path, df, extra: dict[str, float] | None = None, step: int | None = None,
                   tags: dict[str, str] | None = None) -> None:
    """Add an evaluation table (and ``extra`` metrics such as a sweep objective) to the run's tracked
    run(s), continued by the ids in ``tracking.json``; the table also as an artifact."""
    if not cfg.tracking.enabled or df is None or df.height == 0:
        return
    run_dir = Path(run_dir)
    step = int(step if step is not None else df["step"].max() or 0)
    metrics = {**evaluation_summary(df), **(extra or {})}
    for r in open_runs(cfg.tracking, run_dir, run_dir.name, tags):
        r.log_table("eval_table", df)
        r.log_metrics(metrics, step)
        if RunFolder(run_dir).eval.exists():
            r.log_artifact(RunFolder(run_dir).eval)
        r.finish("finished")


def tracking_callbacks(cfg, run_dir: Path, callbacks) -> list:
    """``callbacks`` plus a :class:`TrackingCallback` when ``cfg.tracking`` names a backend and none is
    given yet (a sweep trial passes its own, with the trial's tags)."""
    callbacks = list(callbacks or [])
    if cfg.tracking.enabled and not any(isinstance(cb, TrackingCallback) for cb in callbacks):
        callbacks.append(TrackingCallback(cfg, run_dir))
    return callbacks
