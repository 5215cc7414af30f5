"""Data pipeline throughput on one core, with baselines measured in the same run.

    .venv/bin/python benchmarks/data_pipeline.py [--quick]

Tiles: 256 px from samples/wsi/CMU-1-Small-Region.svs (level 0, random positions).
- HSV filter: ours (2**24 lookup table, OpenCV units) vs skimage.color.rgb2hsv + the same thresholds.
- HED: ours (collapsed affine map in log space, float32) vs skimage rgb2hed + scale/shift + hed2rgb.
- Whole sample (read + HSV filter with retries + 2x224 global + 8x98 local crops + HED + DINOv2 photometric
  augmentations + normalisation) vs the floor: raw openslide read_region of one 256 px tile.
- DataLoader scaling with 0, 1, 2 workers (the machine has 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # single-core figures: no BLAS helper threads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT / "samples" / "wsi" / "CMU-1-Small-Region.svs"


def rate(fn, items, repeats: int = 3) -> float:
    """Best-of-``repeats`` items per second of ``fn`` over ``items``."""
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for x in items:
            fn(x)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def read_tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    import openslide

    s = openslide.OpenSlide(str(SLIDE))
    w, h = s.dimensions
    rng = np.random.default_rng(seed)
    return [np.asarray(s.read_region((int(rng.integers(0, w - 256)), int(rng.integers(0, h - 256))), 0, (256, 256))
                       .convert("RGB")) for _ in range(n)]


def bench_hsv(tiles):
    from skimage.color import rgb2hsv

    from pathfm.data.hsv import HSVBox, HSVFilter, hsv_box_lut

    hsv_box_lut.cache_clear()
    t = time.perf_counter()
    flt = HSVFilter(HSVBox(), 0.6)
    build = time.perf_counter() - t

    def baseline(tile):
        x = rgb2hsv(tile)
        h, s, v = x[..., 0] * 180, x[..., 1] * 255, x[..., 2] * 255
        m = (h >= 90) & (h <= 180) & (s >= 8) & (s <= 255) & (v >= 103) & (v <= 255)
        return m.mean() >= 0.6

    return rate(flt.accepts, tiles), rate(baseline, tiles[: max(10, len(tiles) // 5)]), build


def bench_hed(tiles):
    from skimage.color import hed2rgb, rgb2hed

    from pathfm.data.hed import hed_augment, sample_hed_params

    rng = np.random.default_rng(0)
    params = [sample_hed_params(rng, 0.05) for _ in tiles]
    pairs = list(zip(tiles, params))

    def ours(tp):
        return hed_augment(tp[0], tp[1])

    def baseline(tp):
        tile, p = tp
        hed = rgb2hed(tile) * np.asarray(p.alpha) + np.asarray(p.beta)
        return (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)

    return rate(ours, pairs), rate(baseline, pairs[: max(10, len(pairs) // 5)])


def full_config(**over):
    from pathfm.config import load_config

    ov = {"data.slides": str(SLIDE), "data.tile_size": 256, "data.mpps": [0.5, 1.0, 2.0],
          "data.crops.global_size": 224, "data.crops.local_size": 98, "data.crops.n_local": 8,
          "data.batch_size": 8, "run.progress": False}
    ov.update(over)
    return load_config("smoke", [f"{k}={v}" for k, v in ov.items()])


def bench_sample(n: int):
    import openslide

    from pathfm.data.dataset import OnlinePatchDataset

    ds = OnlinePatchDataset.from_config(full_config())
    ds[0]
    t = time.perf_counter()
    for k in range(1, n + 1):
        ds[k]
    ours = n / (time.perf_counter() - t)
    s = openslide.OpenSlide(str(SLIDE))
    w, h = s.dimensions
    rng = np.random.default_rng(1)
    locs = [(int(rng.integers(0, w - 256)), int(rng.integers(0, h - 256))) for _ in range(4 * n)]
    floor = rate(lambda xy: s.read_region(xy, 0, (256, 256)), locs, repeats=2)
    return ours, floor, ds.acceptance_rate()["overall"]


def bench_workers(n_batches: int):
    from pathfm.data import build_train_loader
    from pathfm.data.dataset import OnlinePatchDataset

    out = {}
    for nw in (0, 1, 2):
        cfg = full_config(**{"data.num_workers": nw})
        loader = build_train_loader(cfg, dataset=OnlinePatchDataset.from_config(cfg))
        it = iter(loader)
        next(it)  # workers started and warm
        t = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        out[nw] = n_batches * cfg.data.batch_size / (time.perf_counter() - t)
        del it, loader
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        all_cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(all_cores)})  # single-core figures
    n = 100 if args.quick else 300
    tiles = read_tiles(n)
    hsv_ours, hsv_base, lut_build = bench_hsv(tiles)
    hed_ours, hed_base = bench_hed(tiles)
    samp, floor, acc = bench_sample(60 if args.quick else 200)
    rows = [
        ("HSV filter, tiles/s (256 px)", hsv_ours, "skimage rgb2hsv + threshold", hsv_base),
        ("HED augmentation, tiles/s (256 px)", hed_ours, "skimage rgb2hed + hed2rgb", hed_base),
        ("whole sample, samples/s (1 core)", samp, "raw read_region 256 px, tiles/s", floor),
    ]
    print(f"{'measure':<38} {'ours':>10} {'baseline':<34} {'baseline':>10} {'ratio':>8}")
    for name, ours, bname, base in rows:
        print(f"{name:<38} {ours:>10.0f} {bname:<34} {base:>10.0f} {ours / base:>7.2f}x")
    print(f"(HSV lookup table built once per filter config in {lut_build:.2f} s; acceptance rate {acc:.2f}; "
          f"load average {os.getloadavg()[0]:.1f})")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, all_cores)
    scaling = bench_workers(8 if args.quick else 25)
    print(f"\nDataLoader scaling ({os.cpu_count()} cores, batch 8, samples/s):")
    for nw, r in scaling.items():
        print(f"  num_workers={nw}: {r:7.1f}  ({r / scaling[0]:.2f}x of num_workers=0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
