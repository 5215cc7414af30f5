"""The online patching training dataset: sample ``k`` is a pure function of ``(seed, k)``.

``OnlinePatchDataset[k]`` draws its slide, resolution, location, filter retries and every augmentation
from ``numpy.random.default_rng([seed, k])``. With ``data.n_tiles`` set, the tile itself comes from a
fixed pool of ``n_tiles`` draws (``default_rng([seed, k % n_tiles])``) and only the augmentation varies
with ``k`` (``default_rng([seed, k, 1])``).

With ``augment_on = "device"`` (set by :func:`pathfm.data.loader.build_train_loader`) a sample carries the
tile and the drawn parameters of its crops instead of the crops (the same draws: the crops are applied
later, batched, by :class:`pathfm.data.device_augment.DeviceAugment`).
"""

from __future__ import annotations

import numpy as np

from pathfm.config import resolve_path
from pathfm.data.cohorts import slide_weights
from pathfm.data.hsv import HSVFilter
from pathfm.data.inspection_cache import InspectionCache, default_cache_dir
from pathfm.data.multicrop import MultiCrop, photometric_scale
from pathfm.data.patching import TileSampler, TileStats, build_sources
from pathfm.data.provenance import training_entries
from pathfm.data.readers import ReaderOptions


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
        self.augment_on = "cpu"  # "device": samples carry tile + crop parameters (build_train_loader sets it)

    @classmethod
    def from_config(cls, cfg, progress: bool = False) -> "OnlinePatchDataset":
        d = cfg.data
        multicrop = MultiCrop(d)  # first: a missing stain extra or statistics file fails before the slides are opened
        entries = training_entries(d)
        hsv = HSVFilter.from_config(d.tissue)
        options = ReaderOptions.from_config(d)
        cache_dir = default_cache_dir(resolve_path(d.slides)) if d.mask_cache == "auto" else d.mask_cache
        sources = build_sources(entries, d.mpps, hsv, d.tissue.thumbnail_size, d.assume_mpp, progress=progress,
                                options=options, cache=InspectionCache(cache_dir), max_upsample=d.max_upsample)
        sampler = TileSampler(sources, d.mpps, d.mpp_weights, d.tile_size, hsv, d.tissue.max_draws,
                              d.tissue.min_mask_overlap, d.max_open_slides, options,
                              slide_weights=slide_weights([s.entry for s in sources], d.cohorts, d.cohort_weights),
                              level_cache_mb=d.level_cache_mb, position_prior=d.tissue.position_prior)
        return cls(cfg, sampler, multicrop)

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
        common = {"stats": stats.to_dict(), "index": int(k), "slide_id": tile.slide_id, "mpp": tile.mpp,
                  "local_size": self.multicrop.crops.local_size}
        if self.augment_on == "device":
            h, w = tile.pixels.shape[:2]
            params = self.multicrop.draw(aug_rng, w, h, photometric)
            return {"tile": tile.pixels, "crop_params": np.stack([p.to_row() for p in params]).astype(np.float32),
                    **common}
        g, loc = self.multicrop(tile.pixels, aug_rng, photometric)
        return {"global": g, "local": loc, **common}

    def acceptance_rate(self) -> dict:
        """Cumulative in this process: {"overall", "per_slide", "draws", "accepted", "rejected", "skipped_slides"}."""
        return self.stats.acceptance_rate()

    @property
    def slide_ids(self) -> list[str]:
        return [s.slide_id for s in self.sampler.sources]


def collate_multicrop(samples: list[dict]) -> dict:
    """Crop-major batch: global_crops[c * B + i] is global crop c of image i (same for local crops); with
    ``augment_on=device`` samples: ``tiles`` uint8 (B, T, T, 3) and ``crop_params`` float32 (B, n_crops, N_PARAM)."""
    import torch

    b = len(samples)
    stats = TileStats()
    for s in samples:
        stats.merge(s["stats"])
    common = {
        "n_images": b,
        "tile_stats": stats.totals(),
        "slide_stats": stats.to_dict(),
        "indices": [s["index"] for s in samples],
        "slide_ids": [s["slide_id"] for s in samples],
    }
    if "tile" in samples[0]:  # augment_on=device: uint8 tiles + parameters, augmented on the device
        return {"tiles": torch.from_numpy(np.stack([s["tile"] for s in samples])),
                "crop_params": torch.from_numpy(np.stack([s["crop_params"] for s in samples])), **common}
    n_g = len(samples[0]["global"])
    n_l = len(samples[0]["local"])
    g = np.stack([s["global"][c] for c in range(n_g) for s in samples])
    if n_l:
        loc = np.stack([s["local"][c] for c in range(n_l) for s in samples])
    else:
        size = samples[0].get("local_size", 0)
        loc = np.zeros((0, 3, size, size), np.float32)
    return {"global_crops": torch.from_numpy(g), "local_crops": torch.from_numpy(loc), **common}
