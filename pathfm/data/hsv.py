"""HSV tissue filter of the Midnight / Virchow2 recipe, in OpenCV's 8-bit HSV units.

A tile is kept when at least ``min_tissue_fraction`` of its pixels lie in the box
H in [h_min, h_max], S in [s_min, s_max], V in [v_min, v_max] (paper: H 90-180, S 8-255, V 103-255; H is
0-179 for 0-358 degrees, S and V are 0-255).

Speed: the box test of one colour depends on nothing else, so for a given set of bounds all 2**24 RGB
colours can be classified once (:func:`hsv_box_lut`, ~0.7 s, cached per process) and a tile then costs
one table gather per pixel (~6x faster than converting). Building the table only pays off after about
2**24 pixels, so a filter classifies pixels directly until it has converted that many and only then
builds the table (rent-or-buy: never more than about twice the cheaper choice). Short runs (smoke
trials, previews, scans of a few slides) never pay the build; long training runs switch after a few
hundred tiles. Both paths give identical answers. The colour conversion reproduces OpenCV's integer ``cvtColor(..., COLOR_RGB2HSV)`` for 8-bit
images (fixed-point with 12 fractional bits, rounding as OpenCV's ``hsv_shift``), so thresholds mean
exactly what they mean in OpenCV-based pipelines: checked once against ``cv2.cvtColor`` and ``cv2.inRange``
of opencv-python-headless 5.0.0 on all 2**24 colours (identical; OpenCV is not a dependency).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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


_LUTS: OrderedDict[HSVBox, np.ndarray] = OrderedDict()  # per process, most recently used last
_MAX_LUTS = 8


def hsv_box_lut(box: HSVBox) -> np.ndarray:
    """Boolean table of 2**24 entries (cached per process, 8 boxes at most); entry ``r | g << 8 | b << 16``
    says whether colour (r, g, b) is in the box. Indexed so that the little-endian uint32 view of an
    RGBA/RGBX pixel, masked to 24 bits, is the index."""
    lut = _LUTS.get(box)
    if lut is not None:
        _LUTS.move_to_end(box)
        return lut
    lut = np.empty(1 << 24, dtype=bool)
    chunk = 1 << 20
    for start in range(0, 1 << 24, chunk):
        idx = np.arange(start, start + chunk, dtype=np.uint32)
        rgb = np.stack([idx & 0xFF, (idx >> 8) & 0xFF, (idx >> 16) & 0xFF], axis=-1).astype(np.uint8)
        lut[start : start + chunk] = box.contains(rgb_to_hsv_opencv(rgb))
    lut.flags.writeable = False
    _LUTS[box] = lut
    while len(_LUTS) > _MAX_LUTS:
        _LUTS.popitem(last=False)
    return lut


def clear_lut_cache() -> None:
    """Forget every built table (benchmarks use it to time the build)."""
    _LUTS.clear()


def _check_tile(tile: np.ndarray) -> None:
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 RGB/RGBA tile (H, W, 3|4), got {tile.dtype} {tile.shape}")


def _pixel_codes(tile: np.ndarray) -> np.ndarray:
    """24-bit colour codes ``r | g << 8 | b << 16`` of an RGB or RGBA uint8 tile, flattened."""
    _check_tile(tile)
    if tile.shape[2] == 4 and tile.flags.c_contiguous:
        return tile.view(np.uint32).reshape(-1) & np.uint32(0xFFFFFF)
    t = tile[..., :3].astype(np.uint32)
    return t[..., 0] | (t[..., 1] << 8) | (t[..., 2] << 16)


#: pixels a filter converts directly before it builds the 2**24 table (about the build's cost)
LUT_AFTER_PIXELS = 1 << 24


class HSVFilter:
    """Tissue fraction of tiles under an :class:`HSVBox`.

    ``use_lut``: True builds the 2**24 lookup table now, False never builds it, None (default) converts
    pixels directly until ``LUT_AFTER_PIXELS`` have been classified (or a table for this box already
    exists in the process) and uses the table from then on."""

    def __init__(self, box: HSVBox = HSVBox(), min_fraction: float = 0.6, enabled: bool = True,
                 use_lut: bool | None = None, lut_after_pixels: int = LUT_AFTER_PIXELS):
        self.box = box
        self.min_fraction = float(min_fraction)
        self.enabled = enabled
        self.use_lut = use_lut
        self.lut_after_pixels = int(lut_after_pixels)
        self.direct_pixels = 0  # classified without the table so far (this process)
        self._lut: np.ndarray | None = hsv_box_lut(box) if use_lut else None

    @classmethod
    def from_config(cls, tissue_cfg) -> "HSVFilter":
        return cls(HSVBox.from_config(tissue_cfg), tissue_cfg.min_tissue_fraction, tissue_cfg.enabled)

    @property
    def lut(self) -> np.ndarray:
        """The 2**24 table of this box (built on first access)."""
        if self._lut is None:
            self._lut = hsv_box_lut(self.box)
        return self._lut

    def _table(self, n_pixels: int) -> np.ndarray | None:
        """The table if it should be used for the next ``n_pixels``, else None (and count them)."""
        if self._lut is not None:
            return self._lut
        if self.use_lut is False:
            return None
        if self.box in _LUTS or self.direct_pixels + n_pixels > self.lut_after_pixels:
            return self.lut
        self.direct_pixels += n_pixels
        return None

    def mask(self, tile: np.ndarray) -> np.ndarray:
        """Per-pixel in-box mask, shape (H, W) (RGB or RGBA uint8; alpha is ignored)."""
        _check_tile(tile)
        lut = self._table(tile.shape[0] * tile.shape[1])
        if lut is None:
            return self.box.contains(rgb_to_hsv_opencv(tile[..., :3]))
        return lut.take(_pixel_codes(tile)).reshape(tile.shape[:2])

    def fraction(self, tile: np.ndarray) -> float:
        """Fraction of the tile's pixels inside the box (RGB or RGBA uint8; alpha is ignored)."""
        return np.count_nonzero(self.mask(tile)) / (tile.shape[0] * tile.shape[1])

    def accepts(self, tile: np.ndarray) -> tuple[bool, float]:
        """(keep?, tissue fraction). With the filter switched off every tile is kept (fraction still reported)."""
        f = self.fraction(tile)
        return (True if not self.enabled else f >= self.min_fraction), f
