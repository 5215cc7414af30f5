"""Samples per CPU-second of one core: pathfm's data path against MedARC-AI/OpenMidnight's own loader.

    python benchmarks/openmidnight_loader.py --openmidnight /path/to/OpenMidnight-checkout [--samples 320] [--rounds 5]
    python benchmarks/openmidnight_loader.py --quick [--openmidnight ...]     # a few batches, one round

The same work on both sides, as far as both support it: the bundled slide samples/wsi/CMU-1-Small-Region.svs
at level 0 (0.499 um/px), 224 px tiles, 2 global crops of 224 px (scale 0.32-1) and 8 local crops of 98 px
(scale 0.05-0.32), bicubic resize, and OpenMidnight's augmentation set: horizontal flip, HED (p 0.5, 0.05),
colour jitter (p 0.8; 0.2, 0.2, 0.1, 0.05), grayscale (p 0.2), Gaussian blur (OpenMidnight's
``GaussianBlur(p)`` hands ``1 - p`` to RandomApply, as DINOv2's does: 0 / 0.9 / 0.5 in effect, pathfm's
default), no solarisation, normalisation; batches of 16 with iBOT block masks for the global crops
(probability 0.5, ratio 0.1-0.5). Each side does what its DataLoader workers (or its training process) do
for a batch:

* OpenMidnight: its ``make_dataset("pathology:...")`` SlideDataset (it opens the slide and reads one tile per
  sample) with its ``DataAugmentationDINO`` (PIL/torchvision, HED through scikit-image), then its
  ``collate_data_and_cast`` with its ``MaskingGenerator``. Its sample list holds tissue positions found
  beforehand (its prepatching) with its own HSV criterion (``SlideDataset.hsv``); finding them is not timed.
* pathfm ``augment_on=cpu``: ``OnlinePatchDataset`` samples (online tissue sampling: a random position, the
  read, the HSV filter with retries; the multi-crop with OpenCV photometric ops), ``collate_multicrop`` and
  ``block_masks``. Tissue detection is inside pathfm's figure and outside OpenMidnight's.
* pathfm ``augment_on=device``: the worker part (read, HSV filter with retries, every crop's parameters drawn;
  no crop made: the crops and photometric ops run batched on the training device), collate and masks.

pathfm's level cache is warmed first, as a training run's first seconds do. Everything runs in this one
process on one thread, pinned to one core; the driver alternates the sides batch by batch, ``--rounds`` times
over ``--samples`` samples, and reports each side's median samples per CPU-second (``time.process_time``),
the ratios and the machine's load. Without a checkout (``--openmidnight`` or $PATHFM_OPENMIDNIGHT_CHECKOUT)
only pathfm's side runs and the OpenMidnight column says why it is empty.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # single-core figures: no BLAS helper threads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT / "samples" / "wsi" / "CMU-1-Small-Region.svs"
OPENMIDNIGHT_ENV = "PATHFM_OPENMIDNIGHT_CHECKOUT"
TILE, GLOBAL, LOCAL, N_LOCAL, BATCH, PATCH = 224, 224, 98, 8, 16, 14
GLOBAL_SCALE, LOCAL_SCALE = (0.32, 1.0), (0.05, 0.32)
MASK_PROBABILITY, MASK_RATIO = 0.5, (0.1, 0.5)
#: pathfm's config for OpenMidnight's augmentation set (module docstring)
PATHFM_OVERRIDES = {
    "data.slides": str(SLIDE), "data.tile_size": TILE, "data.mpps": [0.5], "data.crops.global_size": GLOBAL,
    "data.crops.local_size": LOCAL, "data.crops.n_local": N_LOCAL, "data.crops.global_scale": list(GLOBAL_SCALE),
    "data.crops.local_scale": list(LOCAL_SCALE), "data.crops.vflip": 0.0, "data.crops.solarize_global2": 0.0,
    "data.crops.jitter_strength": [0.2, 0.2, 0.1, 0.05], "data.hed.p": 0.5, "data.hed.strength": 0.05,
    "data.batch_size": BATCH, "loss.mask_probability": MASK_PROBABILITY, "loss.mask_ratio": list(MASK_RATIO),
    "run.progress": False,
}  # fmt: skip


def cpu_seconds(fn: Callable[[], Any]) -> float:
    c = time.process_time()
    fn()
    return time.process_time() - c


# ---------------------------------------------------------------------------------------------- pathfm
class PathfmSide:
    """pathfm's batches: samples of ``OnlinePatchDataset`` (``augment_on`` cpu or device), collate, masks."""

    def __init__(self, augment_on: str, warm_samples: int):
        from pathfm.config import load_config
        from pathfm.data.dataset import OnlinePatchDataset

        self.cfg = load_config("smoke", [f"{k}={v}" for k, v in PATHFM_OVERRIDES.items()])
        self.ds = OnlinePatchDataset.from_config(self.cfg)
        self.ds.augment_on = augment_on
        for k in range(10**6, 10**6 + warm_samples):  # the level cache, as a run's first seconds fill it
            self.ds[k]

    def batch(self, first: int) -> None:
        from pathfm.data.dataset import collate_multicrop
        from pathfm.ssl.masking import block_masks

        collate_multicrop([self.ds[k] for k in range(first, first + BATCH)])
        block_masks(2 * BATCH, (GLOBAL // PATCH, GLOBAL // PATCH), MASK_PROBABILITY, MASK_RATIO,
                    np.random.default_rng(first))


# ---------------------------------------------------------------------------------------------- OpenMidnight
def tissue_positions(is_tissue: Callable[[Any], bool], n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` level-0 positions of 224 px tiles that OpenMidnight's HSV criterion accepts (its prepatching)."""
    import openslide

    slide = openslide.OpenSlide(str(SLIDE))
    w, h = slide.dimensions
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int]] = []
    for _ in range(200 * n):
        x, y = int(rng.integers(0, w - TILE)), int(rng.integers(0, h - TILE))
        if is_tissue(slide.read_region((x, y), 0, (TILE, TILE)).convert("RGB")):
            out.append((x, y))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} of {n} tissue positions found on {SLIDE.name}")


class OpenMidnightSide:
    """OpenMidnight's batches, from its own code in a checkout: SlideDataset + DataAugmentationDINO + collate."""

    def __init__(self, checkout: Path, n_positions: int, workdir: Path):
        sys.path.insert(0, str(checkout))
        from functools import partial

        import torch
        from dinov2.data import DataAugmentationDINO, MaskingGenerator, collate_data_and_cast, make_dataset
        from dinov2.data.datasets import SlideDataset

        grid = GLOBAL // PATCH
        augment = DataAugmentationDINO(GLOBAL_SCALE, LOCAL_SCALE, N_LOCAL, global_crops_size=GLOBAL,
                                       local_crops_size=LOCAL)
        # its HSV criterion (a method that reads no state of the dataset)
        positions = tissue_positions(lambda tile: SlideDataset.hsv(None, tile, TILE) is not None, n_positions)
        self.ds = make_dataset(
            dataset_str=f"pathology:root={workdir}:sample_list_path={self.write_list(workdir, positions)}",
            transform=augment, target_transform=lambda _: ())
        self.collate = partial(collate_data_and_cast, mask_ratio_tuple=MASK_RATIO, mask_probability=MASK_PROBABILITY,
                               n_tokens=grid * grid, dtype=torch.float32,
                               mask_generator=MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid))

    @staticmethod
    def write_list(workdir: Path, positions: list[tuple[int, int]]) -> Path:
        path = workdir / f"sample_list_{len(positions)}.txt"
        path.write_text("".join(f"{SLIDE} {x} {y} 0\n" for x, y in positions))
        return path

    def batch(self, first: int) -> None:
        n = len(self.ds)
        self.collate([self.ds[(first + i) % n] for i in range(BATCH)])


# ---------------------------------------------------------------------------------------------- driver
def find_checkout(given: str | None) -> tuple[Path | None, str]:
    """The OpenMidnight checkout to import, or None and the reason."""
    path = given or os.environ.get(OPENMIDNIGHT_ENV)
    if not path:
        return None, f"no checkout given (--openmidnight or ${OPENMIDNIGHT_ENV})"
    root = Path(path).expanduser().resolve()
    if not (root / "dinov2" / "data" / "datasets" / "slide_dataset.py").is_file():
        return None, f"{root} is not an OpenMidnight checkout (no dinov2/data/datasets/slide_dataset.py)"
    return root, ""


def measure(sides: dict[str, Any], samples: int, rounds: int) -> dict[str, list[float]]:
    """Samples per CPU-second of each side, one figure per round; the sides alternate batch by batch."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        spent = dict.fromkeys(sides, 0.0)
        for first in range(r * samples, (r + 1) * samples, BATCH):
            for name, side in sides.items():
                random.seed(first)  # OpenMidnight draws from Python's and torch's RNGs
                import torch

                torch.manual_seed(first)
                spent[name] += cpu_seconds(lambda: side.batch(first))
        for name in sides:
            rates[name].append(samples / spent[name])
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--openmidnight", help=f"an OpenMidnight checkout (default: ${OPENMIDNIGHT_ENV})")
    ap.add_argument("--samples", type=int, default=320, help="samples per round and side (a multiple of 16)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 batches, 1 round, a short warm-up")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    samples = 3 * BATCH if args.quick else max(BATCH, args.samples // BATCH * BATCH)
    rounds = 1 if args.quick else args.rounds
    load_before, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    checkout, why_not = find_checkout(args.openmidnight)
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pathfm_openmidnight_") as workdir:
        if checkout is not None:
            sides["openmidnight"] = OpenMidnightSide(checkout, 64 if args.quick else 512, Path(workdir))
        warm = 20 if args.quick else 300
        sides["pathfm_cpu"] = PathfmSide("cpu", warm)
        sides["pathfm_device"] = PathfmSide("device", warm)
        rates = measure(sides, samples, rounds)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"samples per CPU-second of one core, median of {rounds} round(s) of {samples} samples (batches of {BATCH}); "
          f"224 px tiles at level 0, 2x224 + 8x98 crops, OpenMidnight's augmentation set, iBOT masks")
    base = med.get("openmidnight")
    for name, label in (("openmidnight", "OpenMidnight: SlideDataset + DataAugmentationDINO + collate"),
                        ("pathfm_cpu", "pathfm augment_on=cpu: sample + collate + masks"),
                        ("pathfm_device", "pathfm augment_on=device, worker part + collate + masks")):
        if name not in med:
            print(f"  {label:<60} {'-':>8}   ({why_not})")
            continue
        spread = f"{min(rates[name]):.1f}-{max(rates[name]):.1f}"
        ratio = f"{med[name] / base:6.2f}x OpenMidnight" if base and name != "openmidnight" else ""
        print(f"  {label:<60} {med[name]:8.1f}   [{spread}]  {1e3 / med[name]:6.2f} ms/sample  {ratio}")
    if base:
        print(f"goals: augment_on=cpu >= 2x OpenMidnight ({med['pathfm_cpu'] / base:.2f}x), "
              f"augment_on=device worker part >= 5x ({med['pathfm_device'] / base:.2f}x)")
    print(f"run {started}-{time.strftime('%H:%M', time.gmtime())} UTC; load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
