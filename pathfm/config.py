"""The one config tree of pathfm, validated in one place.

Everything a training run needs is a field of :class:`Config`. Presets live in ``pathfm/configs/*.yaml``
(also reachable as ``configs/`` at the repository root); a run is ``preset + dotted overrides``::

    cfg = load_config("smoke", ["loss.kde_weight=0.1", "data.hed.strength=0"])

Named recipe knobs (what sweeps and ablations vary) have short aliases, see :data:`KNOB_ALIASES`, so a
sweep may say ``kde_weight`` instead of ``loss.kde_weight``.

Validation errors name the field (``data.tissue.min_tissue_fraction``) and the allowed range.
"""

from __future__ import annotations

import copy
import math
import typing
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pathfm.config_renames import rename_deprecated_sections, renamed_key
from pathfm.errors import ConfigError
from pathfm.records.run_folder import TENSORBOARD_DIR

PRESET_DIR = Path(__file__).parent / "configs"
REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "samples"


class _Strict(BaseModel):
    # inf/nan are refused in every float field (optim.base_lr=.inf would otherwise train into a NaN loss)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------- data
class TissueFilterConfig(_Strict):
    """HSV tile filter (Midnight / Virchow2): keep a tile if >= min_tissue_fraction of its pixels lie in
    the box below, in OpenCV units (H 0-180, S and V 0-255)."""

    enabled: bool = True
    min_tissue_fraction: float = Field(0.6, ge=0.0, le=1.0)
    h_min: int = Field(90, ge=0, le=180)
    h_max: int = Field(180, ge=0, le=180)
    s_min: int = Field(8, ge=0, le=255)
    s_max: int = Field(255, ge=0, le=255)
    v_min: int = Field(103, ge=0, le=255)
    v_max: int = Field(255, ge=0, le=255)
    max_draws: int = Field(32, ge=1, description="draws per sample before the slide counts as empty")
    thumbnail_size: int = Field(1024, ge=64, description="longest side of the thumbnail tissue mask")
    min_mask_overlap: float = Field(0.4, ge=0.0, le=1.0, description="tile overlap with the coarse mask")
    position_prior: Literal["window", "pixel"] = Field(
        "window", description="where tile centres are drawn: window: tissue pixels of the thumbnail mask whose "
        "tile-sized window is at least max(min_mask_overlap, min_tissue_fraction) tissue (fewer rejected reads); "
        "pixel: any tissue pixel "
        "(before 2026-11-30). The HSV filter decides on the real pixels either way (docs/data-reads.md)")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "TissueFilterConfig":
        for lo, hi in (("h_min", "h_max"), ("s_min", "s_max"), ("v_min", "v_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) must be <= {hi} ({getattr(self, hi)})")
        return self


class HEDConfig(_Strict):
    """HED colour augmentation (Tellez et al. 2019): per stain channel alpha~U(1-s,1+s), beta~U(-s,s)."""

    strength: float = Field(0.05, ge=0.0, le=1.0, description="sigma; 0 is exactly the identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")


class RandStainNAConfig(_Strict):
    """RandStainNA (Shen et al. 2022): per-image colour-space mean/std replaced by a sampled template."""

    strength: float = Field(1.0, ge=0.0, le=1.0, description="1: the paper's transform; 0 is exactly the identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")
    stats: str | None = Field(None, description="statistics YAML from `pathfm data stain-stats`; null: bundled (LAB)")


class MacenkoAugConfig(_Strict):
    """Macenko stain-concentration jitter (torchstain's MacenkoAugmentor; extra pathfm[stain])."""

    strength: float = Field(0.2, ge=0.0, le=1.0, description="sigma of alpha and beta (torchstain: 0.2); 0 is identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")


class StainAugConfig(_Strict):
    """Which stain augmentation runs (pathfm/data/stain_aug.py); hed reads its parameters from data.hed."""

    method: Literal["hed", "none", "randstainna", "macenko"] = "hed"
    randstainna: RandStainNAConfig = Field(default_factory=RandStainNAConfig)
    macenko: MacenkoAugConfig = Field(default_factory=MacenkoAugConfig)


# Gaussian-blur probabilities per crop. RELEASED: what DINOv2's code ran (its GaussianBlur(p) wrapper hands
# 1 - p to RandomApply, so crop 1 was never blurred and crop 2 blurred with probability 0.9; facebookresearch/
# dinov2 PR #411), hence what Midnight, built on that code, trained with: the default. INTENDED: the paper's
# 1.0 / 0.1 / 0.5, an arm of the augmentation study (`pathfm ablate show augmentation`).
BLUR_RELEASED = {"blur_global1": 0.0, "blur_global2": 0.9, "blur_local": 0.5}
BLUR_INTENDED = {"blur_global1": 1.0, "blur_global2": 0.1, "blur_local": 0.5}


class CropsConfig(_Strict):
    """DINOv2 multi-crop. Sizes must be multiples of the model's patch size (checked in Config)."""

    global_size: int = Field(224, ge=14)
    local_size: int = Field(98, ge=14)
    n_global: Literal[2] = 2
    n_local: int = Field(8, ge=0, le=16)
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.5, ge=0.0, le=1.0, description="tissue has no up")
    color_jitter: float = Field(0.8, ge=0.0, le=1.0, description="probability of DINOv2's colour jitter")
    jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    grayscale: float = Field(0.2, ge=0.0, le=1.0)
    blur_global1: float = Field(BLUR_RELEASED["blur_global1"], ge=0.0, le=1.0, description="blur probability, global crop 1")
    blur_global2: float = Field(BLUR_RELEASED["blur_global2"], ge=0.0, le=1.0)
    blur_local: float = Field(BLUR_RELEASED["blur_local"], ge=0.0, le=1.0)
    solarize_global2: float = Field(0.2, ge=0.0, le=1.0)
    photometric_ramp: tuple[int, int] | None = Field(
        None, description="optimizer steps [start, end] over which the probabilities of colour jitter, grayscale, "
        "blur, solarize and HED ramp linearly from 0 to their values above; null: full from step 0")

    @model_validator(mode="after")
    def _scales(self) -> "CropsConfig":
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        if self.photometric_ramp is not None and not 0 <= self.photometric_ramp[0] <= self.photometric_ramp[1]:
            raise ValueError(f"photometric_ramp must be [start, end] with 0 <= start <= end, got {self.photometric_ramp}")
        return self


class DataConfig(_Strict):
    slides: str = Field(
        "samples/wsi",
        description="a folder of slides or a manifest (.csv/.parquet); relative paths resolve against the "
        "current directory, then the repository root",
    )
    assume_mpp: float | None = Field(None, gt=0.0, description="mpp for slides without metadata (explicit)")
    cohorts: list[str] | None = Field(None, min_length=1, description="only slides of these manifest cohorts")
    cohort_weights: list[float] | None = Field(None, description="draw share per entry of cohorts; null: per slide")
    n_slides: int | None = Field(None, ge=1, description="nested seeded subset of the manifest")
    n_tiles: int | None = Field(None, ge=1, description="fixed tile pool size instead of fully online")
    subset_seed: int = 0
    group_by_patient: bool = False
    tile_size: int = Field(256, ge=32)
    mpps: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0], min_length=1)
    mpp_weights: list[float] | None = None
    max_upsample: float = Field(
        1.1, ge=1.0, description="a slide serves an entry of mpps only if that needs at most this much upsampling "
        "(1.1: 0.125 um/px is never drawn from a 0.25 um/px slide)")
    tissue: TissueFilterConfig = Field(default_factory=TissueFilterConfig)
    hed: HEDConfig = Field(default_factory=HEDConfig)
    stain_aug: StainAugConfig = Field(default_factory=StainAugConfig)
    crops: CropsConfig = Field(default_factory=CropsConfig)
    normalize_mean: float = 0.5
    normalize_std: float = Field(0.5, gt=0.0)
    batch_size: int = Field(8, ge=1, description="images per device per micro-step")
    num_workers: int = Field(0, ge=0)
    max_open_slides: int = Field(16, ge=1, description="LRU bound on open slide handles per worker")
    level_cache_mb: float = Field(
        256.0, ge=0.0, description="per-worker memory (MiB) for slides kept at the training resolutions, so a tile "
        "is a crop from memory instead of a region read + downsample; tiles snap to the output pixel grid; 0: off "
        "(docs/data-reads.md)")
    reader: Literal["auto", "openslide", "tiffslide", "wsidicom"] = Field(
        "auto", description="slide backend; auto: openslide for local files, wsidicom for folders of .dcm files, "
        "tiffslide for URLs (s3://, gs://, az://, https://, memory://); see docs/slides-and-tracking.md")
    remote_block_kb: int = Field(1024, ge=4, description="bytes per request (KiB) when reading remote slides")
    remote_cache_blocks: int = Field(32, ge=1, description="blocks cached per open remote slide (LRU)")
    mask_cache: str | None = Field("auto", description="folder caching each slide's geometry and tissue mask "
                                   "between runs (auto: .pathfm-cache next to the manifest or in the slide folder; "
                                   "null: off)")
    augment_on: Literal["auto", "cpu", "device"] = Field(
        "auto", description="where the multi-crop augmentation runs: cpu (the loader workers make the crops), device "
        "(workers read tiles and draw the crop parameters, the training device applies them batched; "
        "docs/device-augmentation.md), auto: device when training on CUDA, else cpu")

    @model_validator(mode="after")
    def _mpps(self) -> "DataConfig":
        if any(m <= 0 for m in self.mpps):
            raise ValueError(f"mpps must be positive, got {self.mpps}")
        if self.mpp_weights is not None and len(self.mpp_weights) != len(self.mpps):
            raise ValueError("mpp_weights must have one weight per entry of mpps")
        if self.cohort_weights is not None and (self.cohorts is None or len(self.cohort_weights) != len(self.cohorts)
                                                or min(self.cohort_weights) <= 0):  # fmt: skip
            raise ValueError("data.cohort_weights needs data.cohorts and one positive weight per cohort")
        if self.augment_on == "device" and self.stain_aug.method in ("randstainna", "macenko"):
            raise ValueError(f"data.stain_aug.method={self.stain_aug.method} runs in the CPU workers only; "
                             "set data.augment_on to auto or cpu, or use method hed")
        return self


# -------------------------------------------------------------------------------------------- model
ARCHS = ("vit_pico", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_giant")


class ModelConfig(_Strict):
    arch: Literal["vit_pico", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_giant"] = "vit_small"
    patch_size: Literal[14, 16] = 14
    n_registers: int = Field(0, ge=0, le=16)
    layerscale: float | None = Field(1e-5, description="LayerScale init; null disables it")
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    ffn: Literal["mlp", "swiglu"] = "mlp"
    attention: Literal["auto", "sdpa", "xformers"] = "auto"
    init_from: str | None = Field(
        None,
        description="checkpoint, exported backbone, DINOv2 hub / timm state dict, or a name like dinov2:vitg14",
    )
    init_ignore: list[str] = Field(
        default_factory=list,
        description="glob patterns of weight names init_from may leave missing or unused (loading is strict)",
    )
    pos_embed_offset: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="DINOv2 pos-embed resize offset; null: as the weights were trained (0.1, DINOv2 _reg4: 0.0)",
    )
    pos_embed_antialias: bool | None = Field(
        None, description="antialias the pos-embed resize; null: as the weights were trained (False, _reg4: True)"
    )
    activation_checkpointing: bool = Field(
        False, description="recompute each transformer block in the backward pass (torch.utils.checkpoint): "
        "activations of ~one block instead of all; ~30% more compute (docs/large-backbones.md)")
    compile: bool = Field(False, description="torch.compile the backbone (docs/large-backbones.md)")


# how the model runs, not what it is: a checkpoint resumes with these changed
EXECUTION_ONLY_MODEL_FIELDS = ("activation_checkpointing", "compile")


class HeadConfig(_Strict):
    n_prototypes: int = Field(65536, ge=2)
    hidden_dim: int = Field(2048, ge=8)
    bottleneck_dim: int = Field(256, ge=8)
    n_layers: int = Field(3, ge=1)


class LossConfig(_Strict):
    dino_weight: float = Field(1.0, ge=0.0)
    ibot_weight: float = Field(1.0, ge=0.0)
    separate_ibot_head: bool = False
    centering: Literal["sinkhorn_knopp", "softmax"] = "sinkhorn_knopp"
    sinkhorn_iterations: int = Field(3, ge=1)
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    student_temp: float = Field(0.1, gt=0.0)
    koleo_weight: float = Field(0.0, ge=0.0, description="DINOv2 baseline: 0.1")
    kde_weight: float = Field(0.05, ge=0.0, description="Midnight KDE regulariser; 0 switches it off")
    kde_kappa: float = Field(5.0, gt=0.0)
    mask_probability: float = Field(0.5, ge=0.0, le=1.0)
    mask_ratio: tuple[float, float] = (0.1, 0.5)


class OptimConfig(_Strict):
    steps: int = Field(100, ge=1, description="optimizer steps of this stage")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step (Midnight: 2)")
    base_lr: float = Field(4e-3, gt=0.0)
    lr_scaling: Literal["sqrt_wrt_1024", "none"] = "sqrt_wrt_1024"
    min_lr: float = Field(1e-6, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.04, ge=0.0)
    weight_decay_end: float = Field(0.4, ge=0.0)
    momentum_teacher: float = Field(0.992, ge=0.0, le=1.0)
    momentum_teacher_end: float = Field(1.0, ge=0.0, le=1.0)
    teacher_temp_warmup: float = Field(0.04, gt=0.0)
    teacher_temp: float = Field(0.07, gt=0.0)
    teacher_temp_warmup_steps: int = Field(30, ge=0)
    layerwise_decay: float = Field(0.9, gt=0.0, le=1.0)
    patch_embed_lr_mult: float = Field(0.2, ge=0.0)
    freeze_last_layer_steps: int = Field(0, ge=0)
    clip_grad: float | None = Field(3.0, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)


class HighResConfig(_Strict):
    """High-resolution post-training (Midnight-92k/392): same physical area at twice the pixel density."""

    enabled: bool = False
    steps: int = Field(20, ge=1)
    tile_size: int = Field(512, ge=32)
    mpp_factor: float = Field(0.5, gt=0.0, description="multiplies every entry of data.mpps")
    global_size: int = Field(392, ge=14)
    local_size: int = Field(168, ge=14)
    base_lr: float = Field(1e-4, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1, description="micro-steps per optimizer step; null: optim.grad_accum")


class GuardsConfig(_Strict):
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


class RunConfig(_Strict):
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


class ProbeConfig(_Strict):
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


def file_store_uri(uri: str | None) -> str | None:
    """Why the MLflow tracking ``uri`` cannot be used (MLflow's file store: ``file:`` or a bare folder path,
    read-only in MLflow 3, so logging fails at the first step), or None."""
    if not uri or not (uri.startswith("file:") or uri.startswith(("/", "./", "../", "~"))):
        return None
    return (f"{uri!r} is MLflow's file store, which MLflow 3 keeps read-only (logging would fail at the first "
            "step); use a database, e.g. tracking.mlflow.tracking_uri=sqlite:///path/mlflow.db, or a server "
            "(http://host:5000)")


class MlflowTrackingConfig(_Strict):
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


class WandbTrackingConfig(_Strict):
    project: str = "pathfm"
    entity: str | None = None
    mode: Literal["online", "offline"] = "online"


class TensorboardTrackingConfig(_Strict):
    log_dir: str | None = Field(None, description=f"event files (None: <run_dir>/{TENSORBOARD_DIR})")


class TrackingConfig(_Strict):
    """Where runs are logged besides the run directory (pathfm.tracking; docs/slides-and-tracking.md)."""

    mlflow: MlflowTrackingConfig | None = None
    wandb: WandbTrackingConfig | None = None
    tensorboard: TensorboardTrackingConfig | None = None
    group: str | None = Field(None, description="groups runs (a sweep sets its name)")

    @property
    def enabled(self) -> bool:
        return any(x is not None for x in (self.mlflow, self.wandb, self.tensorboard))


class Config(_Strict):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    dino_head: HeadConfig = Field(default_factory=HeadConfig)
    ibot_head: HeadConfig = Field(default_factory=HeadConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    highres: HighResConfig = Field(default_factory=HighResConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        """Accept a deprecated section name (``eval:`` -> ``probe:``) with a DeprecationWarning."""
        if isinstance(data, dict):
            data = rename_deprecated_sections(data)
        return data

    @model_validator(mode="after")
    def _crops_fit_patches(self) -> "Config":
        p = self.model.patch_size
        checks = [
            ("data.crops.global_size", self.data.crops.global_size),
            ("data.crops.local_size", self.data.crops.local_size),
        ]
        if self.highres.enabled:
            checks += [("highres.global_size", self.highres.global_size), ("highres.local_size", self.highres.local_size)]
        for name, size in checks:
            if size % p:
                raise ValueError(
                    f"{name}={size} is not a multiple of model.patch_size={p}; use e.g. {max(p, size // p * p)}"
                )
        return self

    # ------------------------------------------------------------------------------ derived views
    def highres_stage(self) -> "Config":
        """The config of the high-resolution post-training stage derived from this one."""
        hr = self.highres
        d = self.model_dump()
        d["data"]["tile_size"] = hr.tile_size
        d["data"]["mpps"] = [m * hr.mpp_factor for m in self.data.mpps]
        d["data"]["crops"]["global_size"] = hr.global_size
        d["data"]["crops"]["local_size"] = hr.local_size
        if hr.batch_size:
            d["data"]["batch_size"] = hr.batch_size
        if hr.grad_accum:
            d["optim"]["grad_accum"] = hr.grad_accum
        d["optim"]["steps"] = hr.steps
        d["optim"]["base_lr"] = hr.base_lr
        d["optim"]["warmup_steps"] = hr.warmup_steps
        d["optim"]["freeze_last_layer_steps"] = 0
        d["data"]["crops"]["photometric_ramp"] = None  # the network is trained: full augmentation from the start
        # schedules warm-started near their final values (OpenMidnight's lesson)
        d["optim"]["teacher_temp_warmup_steps"] = 0
        d["optim"]["teacher_temp_warmup"] = self.optim.teacher_temp
        d["highres"]["enabled"] = False
        return Config.model_validate(d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------- knobs and overrides
KNOB_ALIASES: dict[str, str] = {
    "seed": "seed",
    "kde_weight": "loss.kde_weight",
    "kde_kappa": "loss.kde_kappa",
    "koleo_weight": "loss.koleo_weight",
    "min_tissue_fraction": "data.tissue.min_tissue_fraction",
    "hsv_filter": "data.tissue.enabled",
    "h_min": "data.tissue.h_min",
    "h_max": "data.tissue.h_max",
    "s_min": "data.tissue.s_min",
    "s_max": "data.tissue.s_max",
    "v_min": "data.tissue.v_min",
    "v_max": "data.tissue.v_max",
    "hed_strength": "data.hed.strength",
    "hed_p": "data.hed.p",
    "stain_aug": "data.stain_aug.method",
    "vflip": "data.crops.vflip",
    "color_jitter": "data.crops.color_jitter",
    "blur_global1": "data.crops.blur_global1",
    "blur_global2": "data.crops.blur_global2",
    "blur_local": "data.crops.blur_local",
    "momentum_teacher": "optim.momentum_teacher",
    "n_slides": "data.n_slides",
    "cohorts": "data.cohorts",
    "n_tiles": "data.n_tiles",
    "highres": "highres.enabled",
    "highres_steps": "highres.steps",
    "steps": "optim.steps",
    "base_lr": "optim.base_lr",
    "centering": "loss.centering",
    "arch": "model.arch",
}


def resolve_key(key: str) -> str:
    """Map a knob alias (``kde_weight``) or a dotted path (``loss.kde_weight``) to the dotted path,
    raising ConfigError with close matches when the key names no field."""
    dotted = KNOB_ALIASES.get(key, key)
    dotted = renamed_key(dotted)
    node: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            here = ".".join(parts[:i]) or "<root>"
            known = sorted(fields) if fields else []
            import difflib

            close = difflib.get_close_matches(part, list(dict.fromkeys(known + list(KNOB_ALIASES))), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; fields of {here}: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{key}' (no field '{part}' in {here}){hint}")
        ann = fields[part].annotation
        models = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        node = models[0] if models else None  # a section, or an optional one (``GuardsConfig | None``)
    return dotted


def set_dotted(tree: dict, key: str, value: Any, *, resolved: bool = False) -> None:
    """Set ``tree[a][b][c] = value`` for key ``a.b.c`` (an alias is resolved first, unless ``resolved``)."""
    parts = (key if resolved else resolve_key(key)).split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_dotted(cfg: Config | dict, key: str) -> Any:
    node: Any = cfg.model_dump() if isinstance(cfg, Config) else cfg
    for part in resolve_key(key).split("."):
        node = node[part]
    return node


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML (safe)."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. loss.kde_weight=0.1)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': not a valid YAML value ({str(e).splitlines()[0]})") from None
    return out


def find_preset(name_or_path: str | Path) -> Path:
    """A preset name (``cpu``: ``pathfm/configs/cpu.yaml``) or a YAML path (relative to the current folder, else
    to the repository root). Something path-like (a path separator, or ending in .yaml/.yml) that does not exist
    is an error naming it, never the bundled preset of the same name."""
    p = Path(name_or_path)
    known = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
    text = str(name_or_path)
    if "/" in text or "\\" in text or p.suffix in (".yaml", ".yml"):
        for cand in (p.expanduser(), REPO_ROOT / p):
            if cand.exists():
                return cand
        where = "" if p.is_absolute() else " (looked in the current folder and the repository root)"
        preset = f"; for the bundled preset, give its name: {p.stem}" if p.stem in known else ""
        raise ConfigError(f"config file '{name_or_path}' does not exist{where}{preset}")
    if (PRESET_DIR / f"{p.name}.yaml").exists():
        return PRESET_DIR / f"{p.name}.yaml"
    if (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    raise ConfigError(f"config '{name_or_path}' not found; give a YAML path or a preset: {', '.join(known)}")


def read_yaml(path: str | Path, *, allow_empty: bool = True) -> dict:
    """A YAML mapping from ``path``. ``allow_empty=False`` (config files): an empty file, or one of only comments,
    is an error instead of an empty mapping (it would silently mean every default)."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(q.name for q in path.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        hint = f"give a file in it ({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''})" if inside else \
            "give the path of a YAML file"
        raise ConfigError(f"{path} is a folder, not a YAML file; {hint} or a preset name")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as a YAML config ({e}); give a readable text file") from None
    if data is None and not allow_empty:
        raise ConfigError(f"{path}: the config file is empty (or only comments), which would silently mean every "
                          "default; give settings (e.g. base: smoke), or write {} to mean all defaults")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def config_from_dict(tree: dict, *, source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        lines = []
        errors = e.errors()
        for err in errors[:MAX_LISTED_ERRORS]:  # a file of 100,000 unknown keys must not print 100,000 lines
            loc = ".".join(str(x) for x in err["loc"])
            got = "" if not loc else f" (got {_clip(repr(err.get('input')))})"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc or '<root>'}: {msg}{got}")
        if len(errors) > MAX_LISTED_ERRORS:
            unknown = sum(err["type"] == "extra_forbidden" for err in errors)
            lines.append(f"  ... and {len(errors) - MAX_LISTED_ERRORS} more ({len(errors)} problems, {unknown} of them "
                         "unknown keys: is this a pathfm config?)")
        if len(lines) == 1:  # one problem: one line
            raise ConfigError(f"{source} is invalid: {lines[0].strip()}") from None
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines)) from None


MAX_LISTED_ERRORS = 20  # validation problems listed in a ConfigError; the rest are counted


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def load_config(preset: str | Path | None = "smoke", overrides: list[str] | dict | None = None, *,
                resolved: bool = False) -> Config:
    """Preset (name or YAML path; a preset may say ``base: other_preset``) + overrides -> Config.
    ``resolved``: the override keys are dotted paths that :func:`resolve_key` already returned (a sweep's
    trial overrides), set as they are instead of being resolved again."""
    tree: dict = {}
    source = "defaults"
    if preset is not None:
        path = find_preset(preset)
        tree = read_yaml(path, allow_empty=False)
        chain = [tree]
        while "base" in chain[-1]:
            chain.append(read_yaml(find_preset(chain[-1].pop("base")), allow_empty=False))
        tree = {}
        for layer in reversed(chain):
            try:
                tree = merge(tree, rename_deprecated_sections(layer))
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
        source = str(path)
    ov = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in ov.items():
        try:
            set_dotted(tree, key, value, resolved=resolved)
        except ConfigError as e:
            raise ConfigError(f"{source} override: {e}") from None
    return config_from_dict(tree, source=source)


def lr_scaled(cfg: Config, world_size: int = 1) -> float:
    """Base lr after the scaling rule (DINOv2: base_lr * sqrt(global_batch / 1024))."""
    if cfg.optim.lr_scaling == "none":
        return cfg.optim.base_lr
    global_batch = cfg.data.batch_size * world_size * cfg.optim.grad_accum
    return cfg.optim.base_lr * math.sqrt(global_batch / 1024)


def resolve_path(p: str | Path) -> Path:
    """A user path: absolute, else relative to the cwd if it exists there, else to the repository root."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    alt = REPO_ROOT / p
    return alt.resolve() if alt.exists() else p.resolve()
