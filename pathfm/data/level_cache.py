"""Per-worker memory cache of slides at the training resolutions (``data.level_cache_mb``).

A tile at 1 or 2 um/px of a slide without a pyramid level near that resolution (a one-level 0.5 um/px
slide) reads a 512^2 or 1024^2 px level region and box-averages it: ~10 ms per read where a 256 px
crop from memory costs ~0.1 ms. This cache keeps the slide *at the output resolution* in blocks of
:data:`BLOCK` x :data:`BLOCK` output pixels (least recently used dropped first, at most
``budget_mb`` per process), filled lazily: a tile's missing blocks are read in one region read (their
bounding box), box-averaged by the integer factor and stored; the tile is then copied out of the blocks.

Pixels do not depend on what is cached: block ``(i, j)`` is always the box average of the same level
pixels, and a tile is the output-pixel window ``[xo, xo + size)`` of the slide's image at that
resolution, where ``xo = floor(level x / factor)`` (the tile origin snapped to the output grid, at most
``factor - 1`` level pixels, i.e. under one output pixel, from the drawn position). A tile from the cache is
bit-identical to :func:`pathfm.data.slides.read_tile` at the snapped origin (tested), so sample ``k``
stays a pure function of ``(seed, k)`` whatever a worker has cached.

When the cache serves a (slide, resolution) is decided once from the slide's geometry, never from
history (:func:`cache_plan`): the read must be exact on the level grid (level 0, or any level of an
exact-grid reader: tiffslide, wsidicom; openslide resamples sub-pixel positions on levels > 0 of some
formats), the level-to-output factor an integer (after :data:`pathfm.data.slides.SNAP_TOLERANCE`), and
the whole slide at that resolution must fit the budget, together with the other (slide, resolution) pairs
the cache serves (:func:`admit_plans`: smallest first), so that cached slides do not evict each other.
Everything else is read as before.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pathfm.data.slides import SlideGeometry, level_read_size

#: side of a cached block in output pixels: a tile of 256 px at a random position touches at most 5 x 5
#: blocks, so a tile whose blocks are all missing reads (256 + 64)^2 output pixels' worth (1.56x the tile)
BLOCK = 64


@dataclass(frozen=True)
class CachePlan:
    """How one (slide, resolution) maps onto the cache: ``factor`` level pixels per output pixel."""

    level: int
    factor: int
    level_downsample: float
    out_width: int  # the slide at the output resolution, in output pixels
    out_height: int

    @property
    def footprint_bytes(self) -> int:
        """Bytes of the whole slide at this resolution in cached blocks."""
        nx, ny = -(-self.out_width // BLOCK), -(-self.out_height // BLOCK)
        return nx * ny * BLOCK * BLOCK * 3

    def level0(self, level_px: int) -> int:
        """A level-0 coordinate every reader maps onto level pixel ``level_px`` (openslide at level 0,
        exact-grid readers: ``round(u / downsample)``)."""
        return int(round(level_px * self.level_downsample))

    def output_origin(self, x0: float, y0: float) -> tuple[int, int]:
        """The tile's origin on the output grid (the drawn level-0 position, snapped down)."""
        ds = self.level_downsample
        return int(round(x0 / ds)) // self.factor, int(round(y0 / ds)) // self.factor


def cache_plan(geometry: SlideGeometry, extent0: float, size: int, exact_levels: bool,
               budget_bytes: int) -> CachePlan | None:
    """The plan for tiles of level-0 side ``extent0`` read as ``size`` px, or None where the cache does not
    serve them (budget 0, a level that is not read exactly, a fractional factor, or a slide too large)."""
    if budget_bytes <= 0:
        return None
    level = geometry.best_level(extent0 / size)
    if level != 0 and not exact_levels:
        return None
    ds = geometry.level_downsamples[level]
    n = level_read_size(extent0 / ds, size)
    if n % size:
        return None
    factor = n // size
    lw, lh = geometry.level_dimensions[level]
    plan = CachePlan(level, factor, ds, -(-lw // factor), -(-lh // factor))
    return plan if plan.footprint_bytes <= budget_bytes else None


def admit_plans(plans: dict, budget_bytes: int) -> dict:
    """The plans the cache serves: smallest footprint first (the coarsest resolutions, where a direct read
    costs most per tile), while they fit the budget *together*, so the served slides never evict each
    other and a tile whose blocks are all missing (a read of up to 1.56x the tile, measured 1.6-1.8x the
    direct read's CPU time) happens once per block, not on every draw. ``plans``: key -> plan or None."""
    admitted, used = {}, 0
    for key, plan in sorted(((k, p) for k, p in plans.items() if p is not None), key=lambda kp: kp[1].footprint_bytes):
        if used + plan.footprint_bytes > budget_bytes:
            break
        admitted[key] = plan
        used += plan.footprint_bytes
    return admitted


class LevelCache:
    """Blocks of slides at output resolutions, LRU under ``budget_mb`` (per process: a forked worker keeps
    what its parent had cached, which is the same pixels; pickling carries no blocks)."""

    def __init__(self, budget_mb: float):
        self.budget_bytes = int(budget_mb * 2**20)
        self.max_blocks = self.budget_bytes // (BLOCK * BLOCK * 3)
        self._blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.hits = self.misses = self.region_reads = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __getstate__(self):
        return {**self.__dict__, "_blocks": OrderedDict()}

    def keys(self) -> set:
        """The (slide, resolution) keys with blocks in the cache."""
        return {k[0] for k in self._blocks}

    def discard(self, key) -> None:
        """Forget every block of ``key`` (a slide dropped from sampling)."""
        for k in [k for k in self._blocks if k[0] == key]:
            del self._blocks[k]

    def tile(self, slide, key, plan: CachePlan, x0: float, y0: float, size: int) -> tuple[np.ndarray, int, int]:
        """(``size`` px RGB uint8 tile, level-0 x, y of its snapped origin) for a tile drawn at level-0
        (x0, y0); ``key`` names the (slide, resolution) pair."""
        xo, yo = plan.output_origin(x0, y0)
        bx0, by0 = xo // BLOCK, yo // BLOCK
        bx1, by1 = (xo + size - 1) // BLOCK, (yo + size - 1) // BLOCK
        wanted = [(bx, by) for by in range(by0, by1 + 1) for bx in range(bx0, bx1 + 1)]
        missing = [b for b in wanted if (key, *b) not in self._blocks]
        self.misses += len(missing)
        self.hits += len(wanted) - len(missing)
        if missing:
            self._fill(slide, key, plan, missing)
        out = np.empty((size, size, 3), np.uint8)
        for bx, by in wanted:
            block = self._blocks[(key, bx, by)]
            self._blocks.move_to_end((key, bx, by))
            # the part of block (bx, by) inside the tile, in block and in tile coordinates
            sx0, sy0 = max(xo - bx * BLOCK, 0), max(yo - by * BLOCK, 0)
            sx1, sy1 = min(xo + size - bx * BLOCK, BLOCK), min(yo + size - by * BLOCK, BLOCK)
            tx0, ty0 = bx * BLOCK + sx0 - xo, by * BLOCK + sy0 - yo
            out[ty0:ty0 + sy1 - sy0, tx0:tx0 + sx1 - sx0] = block[sy0:sy1, sx0:sx1]
        while len(self._blocks) > self.max_blocks:  # after the copy: this tile's blocks are the newest
            self._blocks.popitem(last=False)
        f = plan.factor
        return out, plan.level0(xo * f), plan.level0(yo * f)

    def _fill(self, slide, key, plan: CachePlan, missing: list[tuple[int, int]]) -> None:
        """Read the bounding box of the missing blocks in one region read and store its blocks."""
        bx0, bx1 = min(b[0] for b in missing), max(b[0] for b in missing)
        by0, by1 = min(b[1] for b in missing), max(b[1] for b in missing)
        f = plan.factor
        w, h = (bx1 - bx0 + 1) * BLOCK, (by1 - by0 + 1) * BLOCK  # output pixels
        region = slide.read_region((plan.level0(bx0 * BLOCK * f), plan.level0(by0 * BLOCK * f)), plan.level,
                                   (w * f, h * f))
        if f > 1:
            region = region.reduce(f)  # the box average read_tile takes (same boxes: origin on the f grid)
        pixels = np.asarray(region)
        self.region_reads += 1
        for bx, by in missing:
            ox, oy = (bx - bx0) * BLOCK, (by - by0) * BLOCK
            self._blocks[(key, bx, by)] = pixels[oy:oy + BLOCK, ox:ox + BLOCK].copy()


__all__ = ["BLOCK", "CachePlan", "LevelCache", "admit_plans", "cache_plan"]
