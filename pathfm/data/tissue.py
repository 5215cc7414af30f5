"""Coarse tissue mask of a slide, computed on its thumbnail with the same HSV box as the tile filter.

Used to place tiles: a location is drawn uniformly among tissue pixels of the mask, and a tile must
overlap the mask by at least ``min_mask_overlap`` (paper: 40 %) before it is read and HSV-filtered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from pathfm.data.hsv import HSVFilter


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def thumbnail_tissue(thumb_rgb: np.ndarray, hsv: HSVFilter) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail: HSV box, then a morphological closing and opening
    (cross-shaped, radius 1; pixels outside the image are ignored) that fills pin holes and removes
    isolated specks."""
    m = hsv.mask(thumb_rgb).view(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _CROSS)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _CROSS)
    return m.astype(bool)


@dataclass
class TissueMask:
    """A boolean mask over the slide; ``scale`` = level-0 pixels per mask pixel (x, y)."""

    mask: np.ndarray
    scale: tuple[float, float]

    # computed on first use: a scan reads only the fraction and the count (a third of a scan's mask time)
    @cached_property
    def _integral(self) -> np.ndarray:
        return np.pad(self.mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    @cached_property
    def _tissue_idx(self) -> np.ndarray:
        return np.flatnonzero(self.mask)

    @classmethod
    def from_slide(cls, slide, hsv: HSVFilter, thumbnail_size: int = 1024) -> "TissueMask":
        w, h = slide.dimensions
        thumb = np.asarray(slide.get_thumbnail((thumbnail_size, thumbnail_size)).convert("RGB"))
        th, tw = thumb.shape[:2]
        return cls(thumbnail_tissue(thumb, hsv), (w / tw, h / th))

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def n_tissue(self) -> int:
        return int(np.count_nonzero(self.mask))

    def sample_center(self, rng: np.random.Generator, candidates: np.ndarray | None = None) -> tuple[float, float]:
        """A level-0 point drawn uniformly over the tissue area (uniform tissue pixel + uniform offset), or
        over the mask pixels listed in ``candidates`` (flat indices, e.g. :meth:`window_candidates`)."""
        idx = self._tissue_idx if candidates is None else candidates
        j = idx[rng.integers(idx.size)]
        my, mx = divmod(int(j), self.mask.shape[1])
        ox, oy = rng.random(2)
        return (mx + ox) * self.scale[0], (my + oy) * self.scale[1]

    def overlaps(self, x0: np.ndarray, y0: np.ndarray, extent: float) -> np.ndarray:
        """Fraction of the mask pixels touched by each level-0 square (x0, y0, extent) that are tissue."""
        h, w = self.mask.shape
        c0 = np.clip(np.floor(x0 / self.scale[0]).astype(np.int64), 0, w - 1)
        r0 = np.clip(np.floor(y0 / self.scale[1]).astype(np.int64), 0, h - 1)
        c1 = np.minimum(np.maximum(np.ceil((x0 + extent) / self.scale[0]).astype(np.int64), c0 + 1), w)
        r1 = np.minimum(np.maximum(np.ceil((y0 + extent) / self.scale[1]).astype(np.int64), r0 + 1), h)
        s = self._integral
        total = s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]
        return total / ((r1 - r0) * (c1 - c0))

    def overlap(self, x0: float, y0: float, extent: float) -> float:
        """:meth:`overlaps` of one square."""
        return float(self.overlaps(np.array([float(x0)]), np.array([float(y0)]), extent)[0])

    def window_candidates(self, extent: float, slide_size: tuple[int, int], min_fraction: float) -> np.ndarray:
        """Flat indices of the tissue pixels whose tile window (level-0 side ``extent`` centred on the pixel,
        kept inside the slide as :class:`pathfm.data.patching.TileSampler` keeps it) is at least
        ``min_fraction`` tissue in the mask; all tissue pixels if none is."""
        my, mx = np.divmod(self._tissue_idx, self.mask.shape[1])
        x0 = np.clip((mx + 0.5) * self.scale[0] - extent / 2, 0.0, max(slide_size[0] - extent, 0.0))
        y0 = np.clip((my + 0.5) * self.scale[1] - extent / 2, 0.0, max(slide_size[1] - extent, 0.0))
        keep = self._tissue_idx[self.overlaps(x0, y0, extent) >= min_fraction]
        return keep if keep.size else self._tissue_idx
