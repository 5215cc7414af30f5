"""The run folder: the one owner of every name pathfm gives a file in a training run's directory (a sweep
trial's folder is a run folder too). Other modules ask a :class:`RunFolder` for a path, or import a name
from here; none spells one (tests/test_file_owner.py). Building a RunFolder reads and creates nothing.

::

    config.yaml                  resolved config (rewritten when a resume changes it: config_changes.jsonl)
    config_changes.jsonl         what each resume with another config changed (pathfm.ssl.run_files)
    metrics.jsonl                one record per logged step (pathfm.ssl.step_record)
    checkpoints/step_XXXXXXXX.pt + .sha256 (pathfm.io.checksum_path), or step_XXXXXXXX.dcp/ with train_state.pt
                                 (run.strategy=fsdp; pathfm.backbone.checkpoint, pathfm.backbone.sharded_checkpoint)
    teacher_backbone.pt + .sha256   the exported EMA teacher backbone (pathfm.backbone.backbone_file)
    teacher_backbone_avg<K>[_<stage>].pt   the average of the last K checkpoints (pathfm.backbone.averaging)
    training_slides.csv          the slides / patients trained on (pathfm.data.provenance)
    DONE                         the run finished (or a callback or guard stopped it)
    guard.json                   what stopped the run when a run.guards guard did (pathfm.ssl.guards)
    tracking.json                MLflow / W&B run ids; tensorboard/: TensorBoard's default log dir (pathfm.tracking)
    eval.parquet                 evaluation rows (pathfm.results.EVAL_SCHEMA); eval_diagnostics.jsonl beside it;
                                 eval_cache/: cached features (pathfm.eval.features)
    export/<format>/             `pathfm export` (the format's own files inside: pathfm.backbone.foreign_export)
    eva/<task>/                  `pathfm eva` (eva's own files inside: pathfm.eva)
    trial.json                   a sweep trial's record (:mod:`pathfm.records.trial`)
    STOP, ray_train/             a DDP trial: its driver asks the workers to stop; Ray Train's own folder
    checkpoint_*/pathfm_checkpoint.json   Ray Tune's checkpoint of a trial: a pointer to (or copy of) ours
    .pathfm_pushed.json          object-store sync manifest (also in a sweep folder: pathfm.infra.folder_mirror)
    .injected_failures, .test_hang_done   test fault injection (tests/fault_injection.py)
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_FILE = "config.yaml"
CONFIG_CHANGES_FILE = "config_changes.jsonl"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step_"  # + the step in 8 digits + CHECKPOINT_SUFFIX or SHARDED_SUFFIX
CHECKPOINT_SUFFIX = ".pt"
SHARDED_SUFFIX = ".dcp"
SHARDED_META_FILE = "train_state.pt"  # the non-tensor TrainState fields inside a sharded checkpoint directory
TEACHER_BACKBONE_FILE = "teacher_backbone.pt"
AVERAGED_BACKBONE_PREFIX = "teacher_backbone_avg"
TRAINING_SLIDES_FILE = "training_slides.csv"
DONE_FILE = "DONE"
GUARD_FILE = "guard.json"
TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
EVAL_FILE = "eval.parquet"
EVAL_DIAGNOSTICS_FILE = "eval_diagnostics.jsonl"
EVAL_CACHE_DIR = "eval_cache"
EXPORT_DIR = "export"
EVA_DIR = "eva"
TRIAL_FILE = "trial.json"
STOP_FILE = "STOP"
RAY_TRAIN_DIR = "ray_train"
TUNE_POINTER_FILE = "pathfm_checkpoint.json"
SYNC_MANIFEST_FILE = ".pathfm_pushed.json"
INJECTED_FAILURES_FILE = ".injected_failures"
TEST_HANG_MARKER = ".test_hang_done"

#: every name above that is a whole file or folder name (tests/test_file_owner.py forbids them elsewhere)
NAMES = (CONFIG_FILE, CONFIG_CHANGES_FILE, METRICS_FILE, CHECKPOINTS_DIR, SHARDED_META_FILE, TEACHER_BACKBONE_FILE,
         TRAINING_SLIDES_FILE, DONE_FILE, GUARD_FILE, TRACKING_FILE, TENSORBOARD_DIR, EVAL_FILE, EVAL_DIAGNOSTICS_FILE,
         EVAL_CACHE_DIR, EXPORT_DIR, EVA_DIR, TRIAL_FILE, STOP_FILE, RAY_TRAIN_DIR, TUNE_POINTER_FILE,
         SYNC_MANIFEST_FILE, INJECTED_FAILURES_FILE, TEST_HANG_MARKER)
#: the start of every name built from a number or a label
PREFIXES = (CHECKPOINT_PREFIX, AVERAGED_BACKBONE_PREFIX)

_CHECKPOINT_NAME = re.compile(
    rf"^{CHECKPOINT_PREFIX}(\d{{8}})({re.escape(CHECKPOINT_SUFFIX)}|{re.escape(SHARDED_SUFFIX)})$")


def checkpoint_name(step: int, sharded: bool = False) -> str:
    """``step_00000010.pt`` (``step_00000010.dcp``: a sharded checkpoint's directory)."""
    return f"{CHECKPOINT_PREFIX}{step:08d}{SHARDED_SUFFIX if sharded else CHECKPOINT_SUFFIX}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file or directory name; None for any other name (a sidecar, a temporary)."""
    m = _CHECKPOINT_NAME.match(name)
    return int(m.group(1)) if m else None


class RunFolder:
    """The paths of one run directory (module docstring)."""

    __slots__ = ("path",)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def around(cls, path: str | Path) -> RunFolder | None:
        """The run folder ``path`` is, or a file of it is in (checked up to two levels up: a checkpoint);
        None when none of them holds a config or metrics."""
        path = Path(path)
        for cand in (path, path.parent, path.parent.parent):
            if cls(cand).is_run():
                return cls(cand)
        return None

    def is_run(self) -> bool:
        """Whether the folder holds a run's config or metrics."""
        return self.config.is_file() or self.metrics.is_file()

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def config_changes(self) -> Path:
        return self.path / CONFIG_CHANGES_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint(self, step: int, sharded: bool = False) -> Path:
        return self.checkpoints_dir / checkpoint_name(step, sharded)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint file or sharded directory, oldest first."""
        d = self.checkpoints_dir
        if not d.is_dir():
            return []
        return sorted((step, p) for p in d.iterdir() if (step := checkpoint_step(p.name)) is not None)

    @property
    def teacher_backbone(self) -> Path:
        return self.path / TEACHER_BACKBONE_FILE

    def averaged_backbone(self, k: int, stage: str = "main") -> Path:
        """``teacher_backbone_avg<k>.pt`` (``..._<stage>.pt`` for a stage other than main)."""
        return self.path / f"{AVERAGED_BACKBONE_PREFIX}{k}{'' if stage == 'main' else f'_{stage}'}{CHECKPOINT_SUFFIX}"

    @property
    def training_slides(self) -> Path:
        return self.path / TRAINING_SLIDES_FILE

    @property
    def done(self) -> Path:
        return self.path / DONE_FILE

    @property
    def guard(self) -> Path:
        return self.path / GUARD_FILE

    @property
    def tracking(self) -> Path:
        return self.path / TRACKING_FILE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def artifacts(self) -> tuple[Path, ...]:
        """The files a tracked run gets as artifacts when training ends: config, metrics, teacher backbone."""
        return self.config, self.metrics, self.teacher_backbone

    @property
    def eval(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def eval_cache(self) -> Path:
        return self.path / EVAL_CACHE_DIR

    def export_dir(self, fmt: str) -> Path:
        return self.path / EXPORT_DIR / fmt

    def eva_dir(self, task: str) -> Path:
        return self.path / EVA_DIR / task.replace(":", "_")

    @property
    def trial(self) -> Path:
        return self.path / TRIAL_FILE

    @property
    def stop(self) -> Path:
        return self.path / STOP_FILE

    @property
    def sync_manifest(self) -> Path:
        return self.path / SYNC_MANIFEST_FILE

    @property
    def injected_failures(self) -> Path:
        return self.path / INJECTED_FAILURES_FILE

    @property
    def test_hang_marker(self) -> Path:
        return self.path / TEST_HANG_MARKER


def eval_diagnostics_beside(eval_file: str | Path) -> Path:
    """The feature diagnostics written beside an evaluation rows file (a run's eval.parquet or ``--out``)."""
    return Path(eval_file).with_name(EVAL_DIAGNOSTICS_FILE)
