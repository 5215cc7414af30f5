"""Online patching: draw a tile of ``tile_size`` px at a configured resolution from a random tissue
location of a random slide, HSV-filter it, retry, count.

Everything a draw does comes from the Generator it is given, so a tile is a pure function of the seed
of that Generator (and of which slides this process has dropped, which only changes when slides fail).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pathfm.config import DataConfig
from pathfm.data.hsv import HSVFilter
from pathfm.data.inspection_cache import InspectionCache
from pathfm.data.level_cache import CachePlan, LevelCache, admit_plans, cache_plan
from pathfm.data.manifest import SlideEntry
from pathfm.data.readers import ReaderOptions, choose_reader
from pathfm.data.slides import SlideCache, SlideGeometry, metadata_mpp, open_slide, read_tile, resolve_mpp
from pathfm.data.tissue import TissueMask
from pathfm.errors import SlideError

log = logging.getLogger("pathfm.data")

#: default of ``data.max_upsample`` (owned by the config): a configured resolution is usable for a slide if
#: it needs at most this much upsampling
MAX_UPSAMPLE: float = DataConfig.model_fields["max_upsample"].default


@dataclass
class SlideSource:
    """A slide ready for sampling: resolution, pyramid geometry, tissue mask, usable resolutions."""

    entry: SlideEntry
    mpp: float
    mpp_source: str
    geometry: SlideGeometry
    mask: TissueMask
    mpp_choices: tuple[int, ...]  # indices into the configured mpps this slide can serve

    @property
    def slide_id(self) -> str:
        return self.entry.slide_id


def inspect_slide(entry: SlideEntry, hsv: HSVFilter, thumbnail_size: int, assume_mpp: float | None,
                  options: ReaderOptions | None = None, cache: InspectionCache | None = None):
    """Open a slide once (or take what an earlier run measured from ``cache``): (resolved mpp, its source,
    geometry, tissue mask, slide metadata mpp)."""
    key = None
    if cache is not None and cache.folder is not None:
        try:
            key = cache.key(entry.path, thumbnail_size, hsv)
        except OSError:  # missing or unreachable: opening it below names the problem
            key = None
    hit = cache.get(key) if key is not None else None
    if hit is not None:
        meta, geometry, mask = hit
    else:
        slide = open_slide(entry.path, options)
        try:
            meta = metadata_mpp(slide)
            geometry = SlideGeometry.of(slide)
            mask = TissueMask.from_slide(slide, hsv, thumbnail_size)
        finally:
            slide.close()
        if key is not None:
            cache.put(key, meta, geometry, mask)
    mpp, source = resolve_mpp(entry.path, meta, entry.mpp, assume_mpp)
    return mpp, source, geometry, mask, meta


def usable_mpps(slide_mpp: float, mpps: list[float], max_upsample: float = MAX_UPSAMPLE) -> tuple[int, ...]:
    """Indices of the configured resolutions a slide of ``slide_mpp`` serves with at most ``max_upsample``x
    upsampling."""
    return tuple(i for i, m in enumerate(mpps) if m * max_upsample >= slide_mpp)


@dataclass
class SlideCounts:
    draws: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass
class TileStats:
    """Per-slide draw/accept/reject counts and skip events (mergeable across workers)."""

    per_slide: dict[str, SlideCounts] = field(default_factory=lambda: defaultdict(SlideCounts))
    skipped_slides: int = 0

    def add(self, slide_id: str, accepted: bool) -> None:
        c = self.per_slide[slide_id]
        c.draws += 1
        if accepted:
            c.accepted += 1
        else:
            c.rejected += 1

    def totals(self) -> dict[str, int]:
        d = sum(c.draws for c in self.per_slide.values())
        a = sum(c.accepted for c in self.per_slide.values())
        return {"draws": d, "accepted": a, "rejected": d - a, "skipped_slides": self.skipped_slides}

    def to_dict(self) -> dict:
        return {"per_slide": {k: [c.draws, c.accepted, c.rejected] for k, c in self.per_slide.items()},
                "skipped_slides": self.skipped_slides}

    def merge(self, d: dict) -> None:
        for k, (dr, ac, rj) in d["per_slide"].items():
            c = self.per_slide[k]
            c.draws += dr
            c.accepted += ac
            c.rejected += rj
        self.skipped_slides += d["skipped_slides"]

    def acceptance_rate(self) -> dict:
        t = self.totals()
        return {
            "overall": t["accepted"] / t["draws"] if t["draws"] else float("nan"),
            "per_slide": {k: (c.accepted / c.draws if c.draws else float("nan")) for k, c in self.per_slide.items()},
            "draws": t["draws"], "accepted": t["accepted"], "rejected": t["rejected"],
            "skipped_slides": t["skipped_slides"],
        }


@dataclass
class Tile:
    pixels: np.ndarray  # (T, T, 3) uint8
    slide_id: str
    mpp: float
    x: int  # level-0 top-left
    y: int
    extent: float  # level-0 side length
    tissue_fraction: float
    accepted: bool


class TileSampler:
    """Draws HSV-accepted tiles from a list of :class:`SlideSource`, with a per-process LRU of handles.

    ``level_cache_mb`` and ``position_prior`` default to the previous behaviour here (no level cache, centres
    over every tissue pixel); the training config's defaults turn both on (docs/data-reads.md)."""

    def __init__(self, sources: list[SlideSource], mpps: list[float], mpp_weights: list[float] | None,
                 tile_size: int, hsv: HSVFilter, max_draws: int, min_mask_overlap: float, max_open: int = 16,
                 options: ReaderOptions | None = None, slide_weights: list[float] | None = None,
                 level_cache_mb: float = 0.0, position_prior: str = "pixel"):
        if not sources:
            raise SlideError("no usable slides to sample from")
        self.sources = sources
        self.mpps = [float(m) for m in mpps]
        self.weights = np.asarray(mpp_weights if mpp_weights is not None else [1.0] * len(mpps), dtype=np.float64)
        self.tile_size = int(tile_size)
        self.hsv = hsv
        self.max_draws = int(max_draws)
        self.min_mask_overlap = float(min_mask_overlap)
        self.cache = SlideCache(max_open, options)
        # slides at the training resolutions in memory (pathfm.data.level_cache); 0 MB: every tile read from the slide
        self.level_cache = LevelCache(level_cache_mb)
        if position_prior not in ("window", "pixel"):
            raise ValueError(f"position_prior must be 'window' or 'pixel', got {position_prior!r}")
        self.position_prior = position_prior
        self._candidates: dict[tuple[str, int], np.ndarray] = {}  # (slide path, mpp index) -> mask pixel indices
        # (slide path, mpp index) -> how the level cache serves it; pairs not listed are read directly
        self._plans: dict[tuple[str, int], CachePlan] = self.admitted_plans(options or ReaderOptions())
        self.dropped: dict[str, str] = {}  # slide_id -> reason (this process)
        self._active: list[int] | None = None  # indices of the sources not dropped (rebuilt after a drop)
        self.stats = TileStats()
        # per-source draw probabilities (data.cohort_weights); None: uniform over the active slides
        self.slide_weights = None if slide_weights is None else np.asarray(slide_weights, dtype=np.float64)

    # ------------------------------------------------------------------ one draw
    def pick(self, active: list[int], rng: np.random.Generator) -> SlideSource:
        """The slide of the next draw among the active ones (a dropped slide's share goes to the rest)."""
        if self.slide_weights is None:
            return self.sources[active[int(rng.integers(len(active)))]]
        w = self.slide_weights[active]
        return self.sources[active[int(rng.choice(len(active), p=w / w.sum()))]]

    def propose(self, src: SlideSource, rng: np.random.Generator) -> tuple[float, float, float, int]:
        """(x0, y0, extent0, mpp index): a resolution and a tissue location of a given slide."""
        choices = np.asarray(src.mpp_choices)
        w = self.weights[choices]
        mi = int(choices[rng.choice(len(choices), p=w / w.sum())]) if len(choices) > 1 else int(choices[0])
        extent = self.tile_size * self.mpps[mi] / src.mpp
        cx, cy = src.mask.sample_center(rng, self.candidates(src, mi, extent))
        g = src.geometry
        x0 = min(max(cx - extent / 2, 0.0), max(g.width - extent, 0.0))
        y0 = min(max(cy - extent / 2, 0.0), max(g.height - extent, 0.0))
        return x0, y0, extent, mi

    def candidates(self, src: SlideSource, mi: int, extent: float) -> np.ndarray | None:
        """The mask pixels tile centres are drawn from (``position_prior``; None: every tissue pixel)."""
        if self.position_prior == "pixel":
            return None
        key = (str(src.entry.path), mi)
        if key not in self._candidates:
            need = max(self.min_mask_overlap, self.hsv.min_fraction if self.hsv.enabled else 0.0)
            g = src.geometry
            self._candidates[key] = src.mask.window_candidates(extent, (g.width, g.height), need)
        return self._candidates[key]

    def admitted_plans(self, options: ReaderOptions) -> dict[tuple[str, int], CachePlan]:
        """Which (slide, resolution) pairs the level cache serves: fixed by the slides' geometry, their
        readers and the budget (:func:`pathfm.data.level_cache.admit_plans`), never by what is cached."""
        budget = self.level_cache.budget_bytes
        if budget <= 0:
            return {}
        plans = {}
        for src in self.sources:
            exact = choose_reader(src.entry.path, options.reader) != "openslide"
            for mi in src.mpp_choices:
                extent = self.tile_size * self.mpps[mi] / src.mpp
                plans[(str(src.entry.path), mi)] = cache_plan(src.geometry, extent, self.tile_size, exact, budget)
        return admit_plans(plans, budget)

    def read(self, src: SlideSource, x0: float, y0: float, extent: float, mi: int) -> tuple[np.ndarray, int, int]:
        """(tile pixels, level-0 x, y actually read): from the level cache where it serves this slide and
        resolution (origin snapped to the output grid), else one region read at the best level."""
        slide = self.cache.get(src.entry.path)  # opened even on a cache hit: a vanished slide fails as before
        plan = self._plans.get((str(src.entry.path), mi))
        if plan is None:
            return read_tile(slide, src.geometry, int(x0), int(y0), extent, self.tile_size), int(x0), int(y0)
        return self.level_cache.tile(slide, (str(src.entry.path), mi), plan, x0, y0, self.tile_size)

    def draw_from(self, src: SlideSource, rng: np.random.Generator, stats: TileStats, keep_rejected: list | None = None) -> Tile | None:
        """Up to ``max_draws`` proposals on one slide; the first accepted tile, or None."""
        for _ in range(self.max_draws):
            x0, y0, extent, mi = self.propose(src, rng)
            if src.mask.overlap(x0, y0, extent) < self.min_mask_overlap:
                stats.add(src.slide_id, False)
                continue
            pixels, x, y = self.read(src, x0, y0, extent, mi)
            ok, frac = self.hsv.accepts(pixels)
            stats.add(src.slide_id, ok)
            tile = Tile(pixels, src.slide_id, self.mpps[mi], x, y, extent, frac, ok)
            if ok:
                return tile
            if keep_rejected is not None:
                keep_rejected.append(tile)
        return None

    def active(self) -> list[int]:
        if self._active is None:  # once per drop, not once per sample
            self._active = [i for i, s in enumerate(self.sources) if s.slide_id not in self.dropped]
        return self._active

    def drop(self, src: SlideSource, reason: str) -> None:
        self.dropped[src.slide_id] = reason
        self._active = None
        self.cache.discard(src.entry.path)
        for mi in range(len(self.mpps)):
            self.level_cache.discard((str(src.entry.path), mi))
        msg = f"slide {src.slide_id} ({src.entry.path}) dropped from sampling: {reason}"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def sample(self, rng: np.random.Generator) -> tuple[Tile, TileStats]:
        """One accepted tile and the counts of this sample (also added to ``self.stats``).

        A slide that cannot be read is skipped (counted in ``skipped_slides``) and dropped; a slide that
        has never yielded an accepted tile after ``max_draws`` proposals is dropped with a warning."""
        stats = TileStats()
        try:
            for _attempt in range(4 * len(self.sources) + 8):
                active = self.active()
                if not active:
                    raise SlideError(
                        "every slide was dropped from sampling: "
                        + "; ".join(f"{k}: {v}" for k, v in self.dropped.items())
                        + ". Check the slides (pathfm data scan) and data.tissue (min_tissue_fraction, HSV bounds)"
                    )
                src = self.pick(active, rng)
                try:
                    tile = self.draw_from(src, rng, stats)
                except Exception as e:  # noqa: BLE001 - a broken or vanished slide must not end training
                    if not _is_read_error(e):
                        raise
                    stats.skipped_slides += 1
                    self.drop(src, f"unreadable: {e}")
                    continue
                if tile is not None:
                    return tile, stats
                never = self.stats.per_slide[src.slide_id].accepted + stats.per_slide[src.slide_id].accepted == 0
                if never:
                    self.drop(src, f"no tile passed the HSV filter in {self.max_draws} draws "
                                   f"(data.tissue.min_tissue_fraction={self.hsv.min_fraction})")
            raise SlideError(
                f"no tile passed the tissue filter after {4 * len(self.sources) + 8} slide attempts of "
                f"{self.max_draws} draws; lower data.tissue.min_tissue_fraction or widen the HSV bounds"
            )
        finally:
            self.stats.merge(stats.to_dict())


def _is_read_error(e: Exception) -> bool:
    try:
        import openslide

        if isinstance(e, openslide.OpenSlideError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, (SlideError, OSError))


def build_sources(entries: list[SlideEntry], mpps: list[float], hsv: HSVFilter, thumbnail_size: int,
                  assume_mpp: float | None, progress: bool = False,
                  options: ReaderOptions | None = None, cache: InspectionCache | None = None,
                  max_upsample: float = MAX_UPSAMPLE) -> list[SlideSource]:
    """Validate every slide *before* training: all files openable and with a resolution (one error
    listing every failure), then drop (with a warning) slides without tissue or without a usable
    resolution. Raises SlideError if nothing is left."""
    from pathfm.progress import progress_bar

    inspected, errors = [], []
    for e in progress_bar(entries, desc="slides", disable=not progress, leave=False):
        try:
            inspected.append((e, *inspect_slide(e, hsv, thumbnail_size, assume_mpp, options, cache)))
        except SlideError as err:
            errors.append(str(err))
    if errors:
        raise SlideError(f"{len(errors)} of {len(entries)} slide(s) cannot be used:\n  " + "\n  ".join(errors))
    sources = []
    for e, mpp, source, geometry, mask, _meta in inspected:
        choices = usable_mpps(mpp, mpps, max_upsample)
        if not choices:
            msg = (f"slide {e.slide_id} ({e.path}) dropped: its resolution {mpp:.3g} um/px is coarser than every "
                   f"configured data.mpps {mpps} (more than data.max_upsample={max_upsample}x upsampling)")
        elif mask.n_tissue == 0:
            msg = f"slide {e.slide_id} ({e.path}) dropped: no tissue found in its thumbnail (HSV mask is empty)"
        else:
            sources.append(SlideSource(e, mpp, source, geometry, mask, choices))
            continue
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    if not sources:
        raise SlideError(f"none of the {len(entries)} slide(s) can be sampled (see the warnings above)")
    return sources


__all__ = ["SlideSource", "TileSampler", "TileStats", "Tile", "build_sources", "inspect_slide", "usable_mpps"]
