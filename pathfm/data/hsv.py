"""HSV tissue filter of the Midnight / Virchow2 recipe, in OpenCV's 8-bit HSV units.

A tile is kept when at least ``min_tissue_fraction`` of its pixels lie in the box
H in [h_min, h_max], S in [s_min, s_max], V in [v_min, v_max] (paper: H 90-180, S 8-255, V 103-255; H is
0-179 for 0-358 degrees, S and V are 0-255).

Speed: the box test of one colour depends on nothing else, so for a given set of bounds all 2**24 RGB
colours are classified once (:func:`hsv_box_lut`, ~1 s, cached) and a tile costs one table gather per
pixel. The colour conversion reproduces OpenCV's integer ``cvtColor(..., COLOR_RGB2HSV)`` for 8-bit
images (fixed-point with 12 fractional bits, rounding as OpenCV's ``hsv_shift``), so thresholds mean
exactly what they mean in OpenCV-based pipelines: checked once against ``cv2.cvtColor`` and ``cv2.inRange``
of opencv-python-headless 5.0.0 on all 2**24 colours (identical; OpenCV is not a dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_SHIFT = 12


def _div_tables() -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.where(i > 0, np.rint((255 << _SHIFT) / i), 0).astype(np.int32)
        hdiv = np.where(i > 0, np.rint((180 << _SHIFT) / (6.0 * i)), 0).astype(np.int32)
    return sdiv, hdiv


_SDIV, _HDIV = _div_tables()


def rgb_to_hsv_opencv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> HSV uint8 (..., 3) with OpenCV's 8-bit convention (H 0-179, S, V 0-255)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB (..., 3), got {rgb.dtype} {rgb.shape}")
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    vmin = np.minimum(np.minimum(r, g), b)
    diff = v - vmin
    s = (diff * _SDIV[v] + (1 << (_SHIFT - 1))) >> _SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + (1 << (_SHIFT - 1))) >> _SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class HSVBox:
    """Inclusive bounds in OpenCV units."""

    h_min: int = 90
    h_max: int = 180
    s_min: int = 8
    s_max: int = 255
    v_min: int = 103
    v_max: int = 255

    @classmethod
    def from_config(cls, tissue_cfg) -> "HSVBox":
        return cls(*(int(getattr(tissue_cfg, f)) for f in ("h_min", "h_max", "s_min", "s_max", "v_min", "v_max")))

    def contains(self, hsv: np.ndarray) -> np.ndarray:
        h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        return (
            (h >= self.h_min) & (h <= self.h_max)
            & (s >= self.s_min) & (s <= self.s_max)
            & (v >= self.v_min) & (v <= self.v_max)
        )


@lru_cache(maxsize=8)
def hsv_box_lut(box: HSVBox) -> np.ndarray:
    """Boolean table of 2**24 entries; entry ``r | g << 8 | b << 16`` says whether colour (r, g, b) is in
    the box. Indexed so that the little-endian uint32 view of an RGBA/RGBX pixel, masked to 24 bits, is
    the index."""
    lut = np.empty(1 << 24, dtype=bool)
    chunk = 1 << 20
    for start in range(0, 1 << 24, chunk):
        idx = np.arange(start, start + chunk, dtype=np.uint32)
        rgb = np.stack([idx & 0xFF, (idx >> 8) & 0xFF, (idx >> 16) & 0xFF], axis=-1).astype(np.uint8)
        lut[start : start + chunk] = box.contains(rgb_to_hsv_opencv(rgb))
    lut.flags.writeable = False
    return lut


def _pixel_codes(tile: np.ndarray) -> np.ndarray:
    """24-bit colour codes ``r | g << 8 | b << 16`` of an RGB or RGBA uint8 tile, flattened."""
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 RGB/RGBA tile (H, W, 3|4), got {tile.dtype} {tile.shape}")
    if tile.shape[2] == 4 and tile.flags.c_contiguous:
        return tile.view(np.uint32).reshape(-1) & np.uint32(0xFFFFFF)
    t = tile[..., :3].astype(np.uint32)
    return t[..., 0] | (t[..., 1] << 8) | (t[..., 2] << 16)


class HSVFilter:
    """Tissue fraction of tiles under an :class:`HSVBox`, via the cached 2**24 lookup table."""

    def __init__(self, box: HSVBox = HSVBox(), min_fraction: float = 0.6, enabled: bool = True):
        self.box = box
        self.min_fraction = float(min_fraction)
        self.enabled = enabled
        self.lut = hsv_box_lut(box)

    @classmethod
    def from_config(cls, tissue_cfg) -> "HSVFilter":
        return cls(HSVBox.from_config(tissue_cfg), tissue_cfg.min_tissue_fraction, tissue_cfg.enabled)

    def mask(self, tile: np.ndarray) -> np.ndarray:
        """Per-pixel in-box mask, shape (H, W)."""
        return self.lut[_pixel_codes(tile)].reshape(tile.shape[:2])

    def fraction(self, tile: np.ndarray) -> float:
        """Fraction of the tile's pixels inside the box (RGB or RGBA uint8; alpha is ignored)."""
        codes = _pixel_codes(tile)
        return np.count_nonzero(self.lut.take(codes)) / codes.size

    def accepts(self, tile: np.ndarray) -> tuple[bool, float]:
        """(keep?, tissue fraction). With the filter switched off every tile is kept (fraction still reported)."""
        f = self.fraction(tile)
        return (True if not self.enabled else f >= self.min_fraction), f
