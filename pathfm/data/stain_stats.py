"""Fit RandStainNA's dataset-level statistics from the training tiles of a config:
``pathfm data stain-stats --config smoke --n-tiles 200 --out stats.yaml``.

Tiles are drawn exactly as training draws them (slides, cohorts, resolutions, HSV filter of ``data``):
tile ``k`` comes from ``numpy.random.default_rng([seed, k])``, before any augmentation.
"""

from __future__ import annotations

from pathfm.data.dataset import OnlinePatchDataset
from pathfm.data.randstainna import RandStainNAStats, fit_randstainna_stats


def fit_stain_stats_from_config(cfg, n_tiles: int, color_space: str = "lab", seed: int = 0) -> RandStainNAStats:
    """RandStainNA statistics of ``n_tiles`` training tiles of ``cfg`` (source: the slide set and the draw)."""
    import numpy as np

    ds = OnlinePatchDataset.from_config(cfg)
    tiles = (ds.sampler.sample(np.random.default_rng([seed, k]))[0].pixels for k in range(n_tiles))
    source = (f"{n_tiles} tiles ({cfg.data.tile_size} px, mpps {cfg.data.mpps}) of {cfg.data.slides}, "
              f"seed {seed}, HSV filter {'on' if cfg.data.tissue.enabled else 'off'}")
    return fit_randstainna_stats(list(tiles), color_space, source=source)
