"""Benchmark: cost of each stain augmentation (data.stain_aug.method) per 224 px tile and per multi-crop sample.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stain_aug_speed.py

Per tile: the method's apply function on eight 224 px crops of the bundled tissue tiles (samples/tissue_tiles),
fresh parameters each call, best and median of 5 passes. Per sample: :class:`pathfm.data.multicrop.MultiCrop`
(OpenCV backend) making 2 x 224 + 8 x 98 crops of one 256 px tile, mean of 20 samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from pathfm.config import SAMPLES_DIR, load_config
from pathfm.data.hed import hed_augment, sample_hed_params
from pathfm.data.macenko import macenko_augment, sample_macenko_params
from pathfm.data.multicrop import MultiCrop
from pathfm.data.randstainna import RandStainNAStats, randstainna_augment, sample_randstainna_template


def crops_224(folder: Path) -> list[np.ndarray]:
    out = []
    for p in sorted(folder.glob("tissue-*.png")):
        a = np.asarray(Image.open(p).convert("RGB"))
        out += [np.ascontiguousarray(a[y:y + 224, x:x + 224]) for y in (0, 224) for x in (0, 224)]
    return out


def main() -> None:
    tiles = crops_224(SAMPLES_DIR / "tissue_tiles")
    rng, stats = np.random.default_rng(0), RandStainNAStats.load()
    methods = {
        "hed": lambda t: hed_augment(t, sample_hed_params(rng, 0.05)),
        "randstainna": lambda t: randstainna_augment(t, sample_randstainna_template(rng, stats), 1.0, "lab"),
        "macenko": lambda t: macenko_augment(t, sample_macenko_params(rng, 0.2)),
    }
    for name, fn in methods.items():
        for t in tiles:  # warm-up
            fn(t)
        passes = []
        for _ in range(5):
            start = time.perf_counter()
            for t in tiles:
                fn(t)
            passes.append((time.perf_counter() - start) / len(tiles) * 1e3)
        print(f"{name:12s} {min(passes):6.2f} ms per 224 px tile (best of 5 x {len(tiles)}), median {np.median(passes):.2f}")
    tile = tiles[0] if tiles[0].shape[0] >= 256 else np.ascontiguousarray(
        np.asarray(Image.open(sorted((SAMPLES_DIR / "tissue_tiles").glob("tissue-*.png"))[0]).convert("RGB"))[:256, :256])
    for method in ("none", "hed", "randstainna", "macenko"):
        mc = MultiCrop(load_config("smoke", [f"data.stain_aug.method={method}", "data.crops.global_size=224",
                                             "data.crops.local_size=98", "data.crops.n_local=8"]).data)
        for k in range(3):
            mc(tile, np.random.default_rng(k))
        start = time.perf_counter()
        for k in range(20):
            mc(tile, np.random.default_rng(k))
        print(f"MultiCrop {method:12s} {(time.perf_counter() - start) / 20 * 1e3:6.1f} ms per sample (2 x 224 + 8 x 98 crops)")


if __name__ == "__main__":
    main()
