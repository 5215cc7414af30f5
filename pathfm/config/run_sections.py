"""How a run runs: the ``run`` section (output, device, precision, checkpoints, timeouts, strategy) with its
collapse / divergence ``guards``, and the in-training ``probe``."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pathfm.config.strict import StrictModel


class GuardsConfig(StrictModel):
    """Collapse / divergence guards (pathfm.ssl.guards, docs/guards-and-audits.md): a run whose logged health
    signals cross a threshold for ``patience`` logged steps in a row is stopped with a named reason. Every
    threshold may be null (that check is off); ``run.guards: null`` switches all of them off."""

    start_step: int = Field(0, ge=0, description="global steps before any guard is checked (warm-up grace)")
    patience: int = Field(3, ge=1, description="consecutive logged steps a condition must hold")
    max_target_entropy_fraction: float | None = Field(
        0.98, gt=0.0, le=1.0, description="collapsed: teacher DINO target entropy / ln K at or above this")
    min_teacher_cls_std: float | None = Field(
        1e-3, ge=0.0, description="collapsed: mean per-dimension std of the teacher CLS across the batch below this")
    min_effective_rank: float | None = Field(
        1.5, ge=1.0, description="collapsed: RankMe effective rank of the batch's teacher CLS below this")
    max_loss_ratio: float | None = Field(
        4.0, gt=1.0, description="diverged: loss above this multiple of the lowest loss logged so far")
    max_probe_drop: float | None = Field(
        0.1, gt=0.0, description="probe_dropped: in-training probe balanced accuracy this far below its best")
    stop_on_non_finite: bool = Field(True, description="diverged: a NaN/inf loss stops the run instead of raising")


class RunConfig(StrictModel):
    output_dir: str = "runs"
    name: str | None = Field(None, description="the run's folder inside output_dir (default: <preset>-<time>); "
                             "may hold sub-folders (study/arm1), never '..' or an absolute path")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    guards: GuardsConfig | None = Field(None, description="collapse/divergence guards; null: off ({} = defaults)")
    collective_timeout_s: int = Field(
        600, ge=1, description="seconds a DDP collective (gloo/NCCL) may wait for a peer before the run fails "
        "(torch's default is 30 min / 10 min); a hung rank then ends the run instead of stalling it for hours")
    hang_timeout_s: float | None = Field(
        None, gt=0, description="in a sweep trial: seconds without training progress (a logged step or a checkpoint) "
        "after which the trial process is killed and the sweep retries it from its last checkpoint (needs the spec's "
        "max_failures >= 1); null: off. See pathfm/infra/hang.py")
    startup_timeout_s: float | None = Field(
        None, gt=0, description="with run.hang_timeout_s: seconds from a trial attempt's start to its first logged "
        "step or checkpoint (model build, slide checks, DDP wrap, a first step that compiles) before it counts as "
        "hung; null: 3 x run.hang_timeout_s")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="data parallelism: ddp (full weights per GPU), fsdp (FSDP2: weights, gradients, "
        "optimizer and teacher sharded); auto: fsdp for vit_large/vit_giant on CUDA (docs/large-backbones.md)")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="memory of the GPU a trial gets; --dry-run refuses a trial whose estimate does "
        "not fit (None: the visible CUDA device's, or no check without one)")

    @field_validator("name")
    @classmethod
    def _name_inside_output_dir(cls, name: str | None) -> str | None:
        """A run writes to ``output_dir/name``: a name that leaves that folder would write elsewhere."""
        if not name:  # unset: <preset>-<time>
            return name
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts or PureWindowsPath(name).drive:
            raise ValueError("must be a folder name inside run.output_dir, not a path leaving it; give a plain "
                             "name (e.g. run.name=my-run) and choose the parent folder with run.output_dir")
        return name


class ProbeConfig(StrictModel):
    """In-training fast probe on small cached tasks (``cfg.probe``); what a sweep scheduler reports and prunes
    on. Not the end-of-trial evaluation (``pathfm eval``, a sweep's ``eval:`` section)."""

    every: int = Field(0, ge=0, description="steps between probes; 0 disables")
    tasks: list[str] = Field(default_factory=lambda: ["crc"])
    probe: Literal["knn", "linear"] = "knn"

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_final(cls, data: Any) -> Any:
        """``probe.final`` (formerly ``eval.final``; never read, removed in 0.2) is dropped so that run configs saved by 0.1 still load."""
        if isinstance(data, dict) and "final" in data:
            data = {k: v for k, v in data.items() if k != "final"}
        return data
