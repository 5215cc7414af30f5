"""Stain augmentation as one knob, ``data.stain_aug.method``: ``hed`` (default) | ``none`` | ``randstainna`` |
``macenko``.

- ``hed``: Tellez HED jitter (:mod:`pathfm.data.hed`) with ``data.hed.strength`` / ``data.hed.p``, exactly as
  before the knob existed (it travels in :class:`pathfm.data.crop_params.CropParams` ``hed``, so both the CPU
  and the device path apply it);
- ``none``: no stain augmentation (the HED probability is taken as 0; the draws do not move);
- ``randstainna``: :mod:`pathfm.data.randstainna`, ``data.stain_aug.randstainna.{strength, p, stats}``;
- ``macenko``: :mod:`pathfm.data.macenko` (torchstain), ``data.stain_aug.macenko.{strength, p}``.

The last two run in the CPU workers only (``data.augment_on: auto`` resolves to cpu for them, ``device`` is
a config error). Their parameters (:class:`StainParams`) are drawn from the crop's generator after every
other draw of the crop (:func:`pathfm.data.crop_params.draw_crop_params`), always, so switching methods
moves no other decision and a sample's stain parameters are a pure function of (seed, sample index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pathfm.config import resolve_path
from pathfm.data.macenko import macenko_augment, require_torchstain, sample_macenko_params
from pathfm.data.randstainna import RandStainNAStats, randstainna_augment, sample_randstainna_template

STAIN_METHODS = ("hed", "none", "randstainna", "macenko")
CPU_ONLY_METHODS = ("randstainna", "macenko")


@dataclass(frozen=True)
class StainParams:
    """One crop's parameters of a CPU-only stain method: ``values`` as the method's sampler returns them;
    ``strength`` and ``color_space`` are what RandStainNA's transform also needs."""

    method: str
    values: tuple[float, ...]
    strength: float = 1.0
    color_space: str = ""


class StainAugmenter:
    """Draws the parameters of a CPU-only method (:func:`apply_stain` applies them); one per ``MultiCrop``."""

    def __init__(self, method: str, strength: float, p: float, randstainna_stats: RandStainNAStats | None = None):
        if method not in CPU_ONLY_METHODS:
            raise ValueError(f"StainAugmenter method {method!r}: expected one of {CPU_ONLY_METHODS}")
        if method == "macenko":
            require_torchstain()  # a missing extra fails here, before any compute
        self.method, self.strength, self.p, self.stats = method, float(strength), float(p), randstainna_stats

    @classmethod
    def from_config(cls, data_cfg) -> "StainAugmenter | None":
        """None unless ``data.stain_aug.method`` is a CPU-only method."""
        sa = data_cfg.stain_aug
        if sa.method == "randstainna":
            c = sa.randstainna
            stats = RandStainNAStats.load(resolve_path(c.stats) if c.stats is not None else None)
            return cls("randstainna", c.strength, c.p, stats)
        if sa.method == "macenko":
            return cls("macenko", sa.macenko.strength, sa.macenko.p)
        return None

    def draw(self, rng: np.random.Generator) -> StainParams:
        if self.method == "macenko":
            return StainParams("macenko", sample_macenko_params(rng, self.strength))
        assert self.stats is not None
        return StainParams("randstainna", sample_randstainna_template(rng, self.stats), self.strength,
                           self.stats.color_space)


def apply_stain(rgb: np.ndarray, params: StainParams) -> np.ndarray:
    """``params`` applied to a uint8 RGB image (a new uint8 image of the same shape)."""
    if params.method == "macenko":
        return macenko_augment(rgb, params.values)  # type: ignore[arg-type]
    return randstainna_augment(rgb, params.values, params.strength, params.color_space)


def hed_probability(data_cfg) -> float:
    """The HED probability per crop: ``data.hed.p`` when ``data.stain_aug.method`` is ``hed``, else 0."""
    return float(data_cfg.hed.p) if data_cfg.stain_aug.method == "hed" else 0.0
