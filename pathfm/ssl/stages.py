"""A run's stages (``main`` and, with ``highres.enabled``, ``highres``) and its progress counters (saved in
checkpoints: :class:`pathfm.backbone.checkpoint.TrainState`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pathfm.config import Config
from pathfm.errors import ConfigError


@dataclass
class Stage:
    name: str
    cfg: Config


@dataclass
class Progress:
    """Everything that counts along the run (saved in checkpoints)."""

    stage_index: int = 0
    stage_step: int = 0  # optimizer steps done in the current stage
    global_step: int = 0  # optimizer steps done in all stages
    tiles_seen: int = 0
    tiles_accepted: int = 0
    tiles_rejected: int = 0
    slides_skipped: int = 0  # unreadable slides dropped from sampling (deleted or corrupt mid-run)
    time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def count_step(self, tiles: dict[str, float]) -> None:
        """One optimizer step done, over ``tiles`` (summed over ranks: images, accepted, rejected, skipped)."""
        self.stage_step += 1
        self.global_step += 1
        self.tiles_seen += int(tiles["images"])
        self.tiles_accepted += int(tiles["accepted"])
        self.tiles_rejected += int(tiles["rejected"])
        self.slides_skipped += int(tiles["skipped"])


def plan_stages(cfg: Config, which: str = "all") -> list[Stage]:
    """``all``: main (+ highres if enabled); ``main``; ``highres`` (only the post-training stage)."""
    stages = [Stage("main", cfg)]
    if which == "highres" and not cfg.highres.enabled:
        raise ConfigError("stage=highres needs highres.enabled=true (and model.init_from=<a checkpoint>)")
    if cfg.highres.enabled:
        stages.append(Stage("highres", cfg.highres_stage()))
    if which == "main":
        return stages[:1]
    if which == "highres":
        return stages[1:]
    return stages
