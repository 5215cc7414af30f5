"""The online patching training dataset: sample ``k`` is a pure function of ``(seed, k)``.

``OnlinePatchDataset[k]`` draws its slide, resolution, location, filter retries and every augmentation
from ``numpy.random.default_rng([seed, k])``. With ``data.n_tiles`` set, the tile itself comes from a
fixed pool of ``n_tiles`` draws (``default_rng([seed, k % n_tiles])``) and only the augmentation varies
with ``k`` (``default_rng([seed, k, 1])``).
"""

from __future__ import annotations

import numpy as np

from pathfm.data.cohorts import select_cohorts, slide_weights
from pathfm.data.hsv import HSVFilter
from pathfm.data.manifest import load_manifest
from pathfm.data.multicrop import MultiCrop, photometric_scale
from pathfm.data.patching import TileSampler, TileStats, build_sources
from pathfm.data.subsets import nested_subset


class OnlinePatchDataset:
    """Map-style dataset over the infinite index space of training samples (torch-compatible)."""

    def __init__(self, cfg, sampler: TileSampler, multicrop: MultiCrop):
        self.seed = int(cfg.seed)
        self.n_tiles = cfg.data.n_tiles
        self.sampler = sampler
        self.multicrop = multicrop
        self.stats = sampler.stats  # cumulative in this process
        self.photometric_ramp = cfg.data.crops.photometric_ramp
        # samples per optimizer step over all ranks (sample k belongs to step k // samples_per_step);
        # build_train_loader sets it for the actual number of processes
        self.samples_per_step = cfg.data.batch_size * cfg.optim.grad_accum

    @classmethod
    def from_config(cls, cfg, progress: bool = False) -> "OnlinePatchDataset":
        d = cfg.data
        entries = select_cohorts(load_manifest(d.slides), d.cohorts, d.slides)
        entries = nested_subset(entries, d.n_slides, d.subset_seed, d.group_by_patient)
        hsv = HSVFilter.from_config(d.tissue)
        sources = build_sources(entries, d.mpps, hsv, d.tissue.thumbnail_size, d.assume_mpp, progress=progress,
                                max_upsample=d.max_upsample)
        sampler = TileSampler(sources, d.mpps, d.mpp_weights, d.tile_size, hsv, d.tissue.max_draws,
                              d.tissue.min_mask_overlap, d.max_open_slides,
                              slide_weights=slide_weights([s.entry for s in sources], d.cohorts, d.cohort_weights))
        return cls(cfg, sampler, MultiCrop(d))

    def __len__(self) -> int:  # the stream is infinite; torch only needs a number
        return 2**62

    def rngs(self, k: int) -> tuple[np.random.Generator, np.random.Generator]:
        if self.n_tiles is None:
            rng = np.random.default_rng([self.seed, int(k)])
            return rng, rng
        return np.random.default_rng([self.seed, int(k) % self.n_tiles]), np.random.default_rng([self.seed, int(k), 1])

    def __getitem__(self, k: int) -> dict:
        tile_rng, aug_rng = self.rngs(k)
        tile, stats = self.sampler.sample(tile_rng)
        photometric = photometric_scale(int(k) // self.samples_per_step, self.photometric_ramp)
        g, loc = self.multicrop(tile.pixels, aug_rng, photometric)
        return {"global": g, "local": loc, "stats": stats.to_dict(), "index": int(k),
                "slide_id": tile.slide_id, "mpp": tile.mpp, "local_size": self.multicrop.crops.local_size}

    def acceptance_rate(self) -> dict:
        """Cumulative in this process: {"overall", "per_slide", "draws", "accepted", "rejected", "skipped_slides"}."""
        return self.stats.acceptance_rate()

    @property
    def slide_ids(self) -> list[str]:
        return [s.slide_id for s in self.sampler.sources]


def collate_multicrop(samples: list[dict]) -> dict:
    """Crop-major batch: global_crops[c * B + i] is global crop c of image i (same for local crops)."""
    import torch

    b = len(samples)
    n_g = len(samples[0]["global"])
    n_l = len(samples[0]["local"])
    g = np.stack([s["global"][c] for c in range(n_g) for s in samples])
    if n_l:
        loc = np.stack([s["local"][c] for c in range(n_l) for s in samples])
    else:
        size = samples[0].get("local_size", 0)
        loc = np.zeros((0, 3, size, size), np.float32)
    stats = TileStats()
    for s in samples:
        stats.merge(s["stats"])
    return {
        "global_crops": torch.from_numpy(g),
        "local_crops": torch.from_numpy(loc),
        "n_images": b,
        "tile_stats": stats.totals(),
        "slide_stats": stats.to_dict(),
        "indices": [s["index"] for s in samples],
        "slide_ids": [s["slide_id"] for s in samples],
    }
