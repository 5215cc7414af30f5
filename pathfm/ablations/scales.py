"""Scales of a study: ``smoke`` (CPU, minutes), ``small`` (ViT-S, one GPU), ``paper`` (ViT-B/14, 166,700
steps), ``paper-vitg`` (the full recipe at ViT-g/14). Defined in ``pathfm/ablations/scales.yaml``; a
user can point ``PATHFM_SCALES`` at an edited copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pathfm.config import read_yaml
from pathfm.errors import ConfigError

SCALES_FILE = Path(__file__).with_name("scales.yaml")


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: str = Field(description="preset name or YAML path")
    seeds: int = Field(1, ge=1, description="default number of replicate seeds")
    device: Literal["cpu", "gpu"] = "gpu"
    overrides: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=lambda: {"cpu": 1, "gpu": 0, "workers": 1})
    max_concurrent_trials: int | None = None
    report_every: int = 5
    eval: dict[str, Any] = Field(default_factory=dict)
    step_time_s: dict[str, float] = Field(default_factory=dict)
    peak_tflops: float = Field(989.0, gt=0)
    mfu: float = Field(0.3, gt=0, le=1)
    trial_overhead_s: float = Field(0.0, ge=0, description="fixed cost per trial: start-up + final evaluation")


def scales_file() -> Path:
    return Path(os.environ.get("PATHFM_SCALES", SCALES_FILE))


def load_scales(path: str | Path | None = None) -> dict[str, Scale]:
    path = Path(path) if path else scales_file()
    raw = read_yaml(path)
    out = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: scale '{name}' must be a mapping")
        try:
            out[name] = Scale.model_validate({"name": name, **body})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"{path}: scale '{name}' field '{loc}': {err['msg']}") from None
    return out


def get_scale(name: str) -> Scale:
    scales = load_scales()
    if name not in scales:
        raise ConfigError(f"unknown scale '{name}'; choose one of: {', '.join(scales)}")
    return scales[name]
