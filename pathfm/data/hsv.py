"""HSV tissue filter of the Midnight / Virchow2 recipe, in OpenCV's 8-bit HSV units.

A tile is kept when at least ``min_tissue_fraction`` of its pixels lie in the box
H in [h_min, h_max], S in [s_min, s_max], V in [v_min, v_max] (paper: H 90-180, S 8-255, V 103-255; H is
0-179 for 0-358 degrees, S and V are 0-255).

The filter *is* OpenCV: ``cv2.cvtColor(tile, cv2.COLOR_RGB2HSV)``, ``cv2.inRange`` with the inclusive
bounds and ``cv2.countNonZero`` (opencv-python-headless), so thresholds mean exactly what they mean in
OpenCV-based pipelines (OpenCV rounds H and S to the nearest integer with fixed-point arithmetic; a
colour whose exact hue or saturation lies within ~0.15 of a half-integer may round either way). Tests
check the per-pixel decision against ``cvtColor`` + ``inRange`` on all 2**24 colours, and against an
independent floating-point HSV conversion at the box edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class HSVBox:
    """Inclusive bounds in OpenCV units (H 0-180, S and V 0-255)."""

    h_min: int = 90
    h_max: int = 180
    s_min: int = 8
    s_max: int = 255
    v_min: int = 103
    v_max: int = 255

    @classmethod
    def from_config(cls, tissue_cfg) -> "HSVBox":
        return cls(*(int(getattr(tissue_cfg, f)) for f in ("h_min", "h_max", "s_min", "s_max", "v_min", "v_max")))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) uint8 arrays (H, S, V) for ``cv2.inRange``."""
        lo, hi = (self.h_min, self.s_min, self.v_min), (self.h_max, self.s_max, self.v_max)
        if not all(0 <= x <= 255 for x in lo + hi):
            raise ValueError(f"HSV bounds must lie in 0..255, got {self}")
        return np.array(lo, dtype=np.uint8), np.array(hi, dtype=np.uint8)


def _check_tile(tile: np.ndarray) -> None:
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 RGB/RGBA tile (H, W, 3|4), got {tile.dtype} {tile.shape}")


class HSVFilter:
    """Tissue fraction of tiles under an :class:`HSVBox` (OpenCV ``cvtColor`` + ``inRange``)."""

    def __init__(self, box: HSVBox = HSVBox(), min_fraction: float = 0.6, enabled: bool = True):
        self.box = box
        self.min_fraction = float(min_fraction)
        self.enabled = enabled
        self._lo, self._hi = box.bounds()

    @classmethod
    def from_config(cls, tissue_cfg) -> "HSVFilter":
        return cls(HSVBox.from_config(tissue_cfg), tissue_cfg.min_tissue_fraction, tissue_cfg.enabled)

    def _in_range(self, tile: np.ndarray) -> np.ndarray:
        """uint8 (H, W) mask, 255 inside the box (RGB or RGBA uint8; alpha is ignored)."""
        tile = np.asarray(tile)
        _check_tile(tile)
        return cv2.inRange(cv2.cvtColor(tile, cv2.COLOR_RGB2HSV), self._lo, self._hi)

    def mask(self, tile: np.ndarray) -> np.ndarray:
        """Per-pixel in-box mask, boolean (H, W) (RGB or RGBA uint8; alpha is ignored)."""
        return self._in_range(tile).astype(bool)

    def fraction(self, tile: np.ndarray) -> float:
        """Fraction of the tile's pixels inside the box (RGB or RGBA uint8; alpha is ignored)."""
        m = self._in_range(tile)
        return cv2.countNonZero(m) / m.size

    def accepts(self, tile: np.ndarray) -> tuple[bool, float]:
        """(keep?, tissue fraction). With the filter switched off every tile is kept (fraction still reported)."""
        f = self.fraction(tile)
        return (True if not self.enabled else f >= self.min_fraction), f
