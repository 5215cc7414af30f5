"""The ``tracking`` section: MLflow, W&B and TensorBoard logging of a run (pathfm.tracking)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pathfm.config.strict import StrictModel
from pathfm.records.run_folder import TENSORBOARD_DIR


def file_store_uri(uri: str | None) -> str | None:
    """Why the MLflow tracking ``uri`` cannot be used (MLflow's file store: ``file:`` or a bare folder path,
    read-only in MLflow 3, so logging fails at the first step), or None."""
    if not uri or not (uri.startswith("file:") or uri.startswith(("/", "./", "../", "~"))):
        return None
    return (f"{uri!r} is MLflow's file store, which MLflow 3 keeps read-only (logging would fail at the first "
            "step); use a database, e.g. tracking.mlflow.tracking_uri=sqlite:///path/mlflow.db, or a server "
            "(http://host:5000)")


class MlflowTrackingConfig(StrictModel):
    tracking_uri: str | None = Field(None, description="e.g. sqlite:///mlflow.db or http://host:5000 (None: "
                                     "MLFLOW_TRACKING_URI or MLflow's default)")
    experiment: str = "pathfm"
    artifact_location: str | None = Field(None, description="for a new experiment (None: the server's default; "
                                          "next to the database for sqlite:// URIs)")

    @field_validator("tracking_uri")
    @classmethod
    def _not_the_file_store(cls, uri: str | None) -> str | None:
        """MLflow 3 keeps its file store read-only: a ``file:`` URI (or a bare folder) would fail at the first
        logged step, mid-training, with no checkpoint; refused here, before step 1."""
        why = file_store_uri(uri)
        if why:
            raise ValueError(why)
        return uri


class WandbTrackingConfig(StrictModel):
    project: str = "pathfm"
    entity: str | None = None
    mode: Literal["online", "offline"] = "online"


class TensorboardTrackingConfig(StrictModel):
    log_dir: str | None = Field(None, description=f"event files (None: <run_dir>/{TENSORBOARD_DIR})")


class TrackingConfig(StrictModel):
    """Where runs are logged besides the run directory (pathfm.tracking; docs/slides-and-tracking.md)."""

    mlflow: MlflowTrackingConfig | None = None
    wandb: WandbTrackingConfig | None = None
    tensorboard: TensorboardTrackingConfig | None = None
    group: str | None = Field(None, description="groups runs (a sweep sets its name)")

    @property
    def enabled(self) -> bool:
        return any(x is not None for x in (self.mlflow, self.wandb, self.tensorboard))
