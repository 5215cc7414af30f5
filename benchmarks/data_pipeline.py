"""Data pipeline throughput on one core, with baselines measured in the same run.

    .venv/bin/python benchmarks/data_pipeline.py [--quick]

Tiles: 256 px from samples/wsi/CMU-1-Small-Region.svs (level 0, random positions).
Rates are items per second of CPU time of this process (``time.process_time``), pinned to one core, so
they measure per-core throughput even while other jobs share the machine; wall-clock rates are printed
too. DataLoader scaling is wall clock by nature.
- HSV filter: pathfm's filter *is* OpenCV (cvtColor RGB2HSV + inRange + countNonZero), so this row measures
  pathfm's whole per-tile decision (``HSVFilter.accepts``: input check, conversion, box test, count,
  threshold) against the plain OpenCV loop a user would write, with OpenCV single-threaded in both.
- HED: ours (collapsed affine map in log space, float32) vs scikit-image ``rgb2hed`` -> scale/shift ->
  ``hed2rgb``, the same operation (Ruifrok-Johnston matrix, Tellez scale/shift) as a user would write it;
  torchstain was not used as the baseline because it does stain *normalisation* (its Macenko augmentor
  estimates a per-image stain matrix: a different, costlier operation).
- Whole sample (read + HSV filter with retries + 2x224 global + 8x98 local crops + HED + DINOv2 photometric
  augmentations + normalisation) vs the floor: raw openslide read_region of one 256 px tile; the same for
  the smoke preset (128 px tiles, 2x112 + 4x56 crops) vs a raw 128 px read.
- ``data.augment_on`` (docs/device-augmentation.md), recipe crops (256 px tiles, 2x224 + 8x98): the CPU worker
  part with ``augment_on=device`` (read + HSV filter + drawing every crop parameter) against today's whole
  CPU sample and the raw read floor; the device augmentation run on CPU tensors (batches of 16, one
  thread: what it costs where no accelerator is present; on a GPU it is a few batched kernels) per
  sample beside the PIL path; ``augment_on=cpu`` before (every op in PIL) and after (OpenCV photometric
  ops, PIL resize). Reads "before" (``data.level_cache_mb=0``, ``data.tissue.position_prior=pixel``: a 1 or
  2 um/px tile reads 512^2 or 1024^2 px on this one-level slide) and "after" (the defaults: the level cache,
  warmed by 300 samples as in a training run's first seconds, and the window prior), with HSV acceptance.
  The worker part is also measured with ``mpps: [0.5]``.
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


def rate(fn, items, repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` (CPU-time, wall-clock) items per second of ``fn`` over ``items``."""
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for x in items:
            fn(x)
        best_cpu = max(best_cpu, len(items) / max(time.process_time() - c, 1e-9))
        best_wall = max(best_wall, len(items) / (time.perf_counter() - t))
    return best_cpu, best_wall


def read_tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    import openslide

    s = openslide.OpenSlide(str(SLIDE))
    w, h = s.dimensions
    rng = np.random.default_rng(seed)
    return [np.asarray(s.read_region((int(rng.integers(0, w - 256)), int(rng.integers(0, h - 256))), 0, (256, 256))
                       .convert("RGB")) for _ in range(n)]


def bench_hsv(tiles):
    import cv2

    from pathfm.data.hsv import HSVBox, HSVFilter

    box = HSVBox()
    flt = HSVFilter(box, 0.6)
    lo, hi = (box.h_min, box.s_min, box.v_min), (box.h_max, box.s_max, box.v_max)

    def opencv(tile):  # what a user writes
        m = cv2.inRange(cv2.cvtColor(tile, cv2.COLOR_RGB2HSV), lo, hi)
        return cv2.countNonZero(m) >= 0.6 * m.size

    assert all(flt.accepts(t)[0] == opencv(t) for t in tiles)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # single-core figures (set in this parent process only, never in a forked worker)
    try:
        ours, base = [], []
        for _ in range(3):  # interleaved, best of 3 rounds of 3
            ours.append(rate(flt.accepts, tiles))
            base.append(rate(opencv, tiles))
        return tuple(map(max, zip(*ours))), tuple(map(max, zip(*base)))
    finally:
        cv2.setNumThreads(threads)


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

    few = pairs[: max(10, len(pairs) // 5)]  # the baseline is ~10x slower
    a, b = [], []
    for _ in range(3):  # interleaved, best of 3 rounds of 3 (both see the same machine load)
        a.append(rate(ours, pairs))
        b.append(rate(baseline, few))
    return tuple(map(max, zip(*a))), tuple(map(max, zip(*b)))


def full_config(**over):
    from pathfm.config import load_config

    ov = {"data.slides": str(SLIDE), "data.tile_size": 256, "data.mpps": [0.5, 1.0, 2.0],
          "data.crops.global_size": 224, "data.crops.local_size": 98, "data.crops.n_local": 8,
          "data.batch_size": 8, "run.progress": False}
    ov.update(over)
    return load_config("smoke", [f"{k}={v}" for k, v in ov.items()])


def bench_sample(cfg, n: int):
    """(ours, floor): whole samples vs raw read_region of one tile of the config's tile size."""
    import openslide

    from pathfm.data.dataset import OnlinePatchDataset

    ds = OnlinePatchDataset.from_config(cfg)
    warm(ds)
    ds[0]
    ours = rate(ds.__getitem__, range(1, n + 1), repeats=1)
    s = openslide.OpenSlide(str(SLIDE))
    w, h = s.dimensions
    size = cfg.data.tile_size
    rng = np.random.default_rng(1)
    locs = [(int(rng.integers(0, w - size)), int(rng.integers(0, h - size))) for _ in range(4 * n)]
    floor = rate(lambda xy: s.read_region(xy, 0, (size, size)), locs, repeats=2)
    return ours, floor, ds.acceptance_rate()["overall"]


#: the reads before pathfm.data.level_cache and the window prior (both config values, in the same run)
PREVIOUS_READS = {"data.level_cache_mb": 0, "data.tissue.position_prior": "pixel"}


def warm(ds, n: int = 300) -> None:
    """Fill the worker's level cache as training does in its first seconds (samples far from the measured ones)."""
    for k in range(10**6, 10**6 + n):
        ds[k]


def bench_augment_on(n: int) -> dict[str, tuple[float, float]]:
    """Samples per CPU-second [wall-second] of each way to make a training sample, same samples, same process;
    reads as before (``PREVIOUS_READS``) and with the level cache + window prior (defaults, cache warmed)."""
    import torch

    from pathfm.data.dataset import OnlinePatchDataset, collate_multicrop
    from pathfm.data.device_augment import DeviceAugment
    from pathfm.data.multicrop import MultiCrop

    ks = range(1, n + 1)
    out = {}
    datasets = {}
    for reads, over in (("before", PREVIOUS_READS), ("after", {})):
        cfg = full_config(**over)
        ds = datasets[reads] = OnlinePatchDataset.from_config(cfg)
        if reads == "after":
            warm(ds)
        ds[0]
        for backend in ("pil", "opencv") if reads == "before" else ("opencv",):
            ds.multicrop = MultiCrop(cfg.data, backend=backend)
            out[f"cpu_{backend}_{reads}"] = rate(ds.__getitem__, ks, repeats=1)
        ds.augment_on = "device"
        out[f"worker_device_{reads}"] = rate(ds.__getitem__, ks, repeats=2)
        out[f"tile_sampling_{reads}"] = rate(lambda k: ds.sampler.sample(ds.rngs(k)[0]), ks, repeats=2)
        out[f"acceptance_{reads}"] = (ds.acceptance_rate()["overall"], 0.0)
    ds = datasets["after"]
    out["draws"] = rate(lambda k: ds.multicrop.draw(ds.rngs(k)[1], 256, 256), ks, repeats=2)
    cfg = full_config()
    level0 = OnlinePatchDataset.from_config(cfg.model_copy(update={"data": cfg.data.model_copy(update={"mpps": [0.5]})}))
    level0.augment_on = "device"
    warm(level0)
    out["worker_device_level0"] = rate(level0.__getitem__, ks, repeats=2)
    batch_size = 16
    batches = [collate_multicrop([ds[k] for k in range(i, i + batch_size)]) for i in range(0, n, batch_size)]
    aug = DeviceAugment(cfg.data, "cpu")
    with torch.inference_mode():
        aug(batches[0])
        cpu_s, wall_s = rate(aug, batches, repeats=1)
    out["device_on_cpu_tensors"] = (cpu_s * batch_size, wall_s * batch_size)
    # the augmentation alone on the same tiles, PIL vs OpenCV (no read)
    tiles = [b["tiles"][i].numpy() for b in batches[:2] for i in range(batch_size)]
    for backend in ("pil", "opencv"):
        mc = MultiCrop(cfg.data, backend=backend)
        out[f"augment_{backend}"] = rate(lambda t: mc(t, np.random.default_rng(0)), tiles, repeats=2)
    return out


def bench_workers(make_config, n_batches: int):
    from pathfm.data import build_train_loader
    from pathfm.data.dataset import OnlinePatchDataset

    out = {}
    for nw in (0, 1, 2):
        cfg = make_config(**{"data.num_workers": nw})
        loader = build_train_loader(cfg, dataset=OnlinePatchDataset.from_config(cfg))
        it = iter(loader)
        next(it)  # workers started and warm
        t = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        out[nw] = (n_batches * cfg.data.batch_size / (time.perf_counter() - t), os.getloadavg()[0])
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
    load_before = os.getloadavg()[0]
    n = 100 if args.quick else 300
    tiles = read_tiles(n)
    hsv_ours, hsv_base = bench_hsv(tiles)
    hed_ours, hed_base = bench_hed(tiles)
    samp, floor, acc = bench_sample(full_config(), 60 if args.quick else 200)
    smoke, smoke_floor, smoke_acc = bench_sample(load_smoke(), 100 if args.quick else 400)
    rows = [
        ("HSV filter, tiles/s (256 px)", hsv_ours, "plain OpenCV cvtColor+inRange", hsv_base),
        ("HED augmentation, tiles/s (256 px)", hed_ours, "skimage rgb2hed + hed2rgb", hed_base),
        ("whole sample, samples/s (1 core)", samp, "raw read_region 256 px, tiles/s", floor),
        ("smoke sample (128 px, 2x112+4x56)", smoke, "raw read_region 128 px, tiles/s", smoke_floor),
    ]
    print("per core: items per CPU-second [per wall-second in brackets]")
    print(f"{'measure':<36} {'ours':>16} {'baseline':<32} {'baseline':>16} {'ratio':>7}")
    for name, (ours, ours_w), bname, (base, base_w) in rows:
        print(f"{name:<36} {ours:>7.0f} [{ours_w:>6.0f}] {bname:<32} {base:>7.0f} [{base_w:>6.0f}] "
              f"{ours / base:>6.2f}x")
    print(f"(pathfm's HSV filter is OpenCV cvtColor+inRange+countNonZero: its row measures pathfm's wrapper; "
          f"acceptance rate {acc:.2f} full, {smoke_acc:.2f} smoke; "
          f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} now)")
    aug = bench_augment_on(48 if args.quick else 160)
    (read, read_w) = floor
    print("\ndata.augment_on, recipe crops (256 px tiles, mpps 0.5/1/2, 2x224 + 8x98), samples per CPU-second of one "
          "core [per wall-second]; reads 'before': data.level_cache_mb=0, data.tissue.position_prior=pixel; 'after': "
          "the defaults (level cache warmed by 300 samples, window prior):")
    for name, key in (("augment_on=cpu, all PIL, reads before", "cpu_pil_before"),
                      ("augment_on=cpu, OpenCV ops, reads before", "cpu_opencv_before"),
                      ("augment_on=cpu, OpenCV ops, reads after", "cpu_opencv_after"),
                      ("augment_on=device, CPU worker part, reads before", "worker_device_before"),
                      ("augment_on=device, CPU worker part, reads after", "worker_device_after"),
                      ("  tile sampling (reads, HSV filter, retries), before", "tile_sampling_before"),
                      ("  tile sampling (reads, HSV filter, retries), after", "tile_sampling_after"),
                      ("  drawing the 10 crops' parameters", "draws"),
                      ("augment_on=device, worker part, mpps [0.5], after", "worker_device_level0"),
                      ("device augmentation on CPU tensors, 1 thread", "device_on_cpu_tensors"),
                      ("multi-crop alone, PIL", "augment_pil"),
                      ("multi-crop alone, OpenCV ops", "augment_opencv")):
        r, w = aug[key]
        print(f"  {name:<54} {r:8.1f} [{w:8.1f}]  {1e3 / r:6.2f} ms/sample")
    print(f"  {'raw read_region 256 px (floor)':<54} {read:8.1f} [{read_w:8.1f}]  {1e3 / read:6.2f} ms/tile")
    base = aug["cpu_pil_before"][0]
    wd = aug["worker_device_after"][0]
    print(f"  HSV acceptance: before {aug['acceptance_before'][0]:.2f}, after {aug['acceptance_after'][0]:.2f}")
    print(f"  worker part (augment_on=device): {wd / aug['worker_device_before'][0]:.1f}x before, "
          f"{wd / read:.2f}x the 256 px read floor (target >= 1/3), {wd:.0f}/s/core (target >= 400); "
          f"augment_on=cpu after / all-PIL before: {aug['cpu_opencv_after'][0] / base:.2f}x (target >= 2x)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, all_cores)
    for name, make in (("full: 256 px, 2x224 + 8x98", full_config), ("smoke: 128 px, 2x112 + 4x56", load_smoke)):
        scaling = bench_workers(make, 8 if args.quick else 25)
        print(f"\nDataLoader scaling, {name} ({os.cpu_count()} cores, batch 8, samples per wall-second):")
        for nw, (r, load) in scaling.items():
            print(f"  num_workers={nw}: {r:7.1f}  ({r / scaling[0][0]:.2f}x of num_workers=0; load average {load:.1f})")
    return 0


def load_smoke(**over):
    """The smoke preset as trials run it (128 px tiles, 2x112 + 4x56 crops, batch 8), on the one slide."""
    from pathfm.config import load_config

    ov = {"data.slides": str(SLIDE), "run.progress": False, **over}
    return load_config("smoke", [f"{k}={v}" for k, v in ov.items()])


if __name__ == "__main__":
    sys.exit(main())
