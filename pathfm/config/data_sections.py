"""The ``data`` section: slides, tissue filter, tile sampling, stain and multi-crop augmentation, loader."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pathfm.config.strict import StrictModel


class TissueFilterConfig(StrictModel):
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


class HEDConfig(StrictModel):
    """HED colour augmentation (Tellez et al. 2019): per stain channel alpha~U(1-s,1+s), beta~U(-s,s)."""

    strength: float = Field(0.05, ge=0.0, le=1.0, description="sigma; 0 is exactly the identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")


class RandStainNAConfig(StrictModel):
    """RandStainNA (Shen et al. 2022): per-image colour-space mean/std replaced by a sampled template."""

    strength: float = Field(1.0, ge=0.0, le=1.0, description="1: the paper's transform; 0 is exactly the identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")
    stats: str | None = Field(None, description="statistics YAML from `pathfm data stain-stats`; null: bundled (LAB)")


class MacenkoAugConfig(StrictModel):
    """Macenko stain-concentration jitter (torchstain's MacenkoAugmentor; extra pathfm[stain])."""

    strength: float = Field(0.2, ge=0.0, le=1.0, description="sigma of alpha and beta (torchstain: 0.2); 0 is identity")
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability per crop")


class StainAugConfig(StrictModel):
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


class CropsConfig(StrictModel):
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


class DataConfig(StrictModel):
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
