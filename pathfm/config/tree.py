"""The root of the config tree, :class:`Config` (one field per section), its derived views and the scaled lr."""

from __future__ import annotations

import math
from typing import Any

import yaml
from pydantic import Field, model_validator

from pathfm.config.data_sections import DataConfig
from pathfm.config.model_sections import HeadConfig, HighResConfig, LossConfig, ModelConfig, OptimConfig
from pathfm.config.renames import rename_deprecated_sections
from pathfm.config.run_sections import ProbeConfig, RunConfig
from pathfm.config.strict import StrictModel
from pathfm.config.tracking_sections import TrackingConfig


class Config(StrictModel):
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


def lr_scaled(cfg: Config, world_size: int = 1) -> float:
    """Base lr after the scaling rule (DINOv2: base_lr * sqrt(global_batch / 1024))."""
    if cfg.optim.lr_scaling == "none":
        return cfg.optim.base_lr
    global_batch = cfg.data.batch_size * world_size * cfg.optim.grad_accum
    return cfg.optim.base_lr * math.sqrt(global_batch / 1024)
