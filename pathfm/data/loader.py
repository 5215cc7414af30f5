"""``build_train_loader(cfg, rank, world_size, start_sample)``: the infinite stream of multi-crop batches.

Micro-batch ``m`` of rank ``r`` holds samples ``k = start_sample + m * B * world_size + r * B + i`` for
``i < B`` (B = ``cfg.data.batch_size``), so the data depends only on ``(seed, k)``: resuming with
``start_sample`` = samples consumed so far continues exactly, and 0, 1 or N workers give the same batches.

``data.augment_on`` (resolved with the training ``device``): ``cpu`` workers return finished crops;
``device`` workers return tiles + crop parameters and the loader applies them on ``device``
(:class:`pathfm.data.device_augment.DeviceAugment`), so either way a batch holds ``global_crops`` and
``local_crops``.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from pathfm.data.dataset import OnlinePatchDataset, collate_multicrop
from pathfm.data.device_augment import DeviceAugment, resolve_augment_on
from pathfm.data.stain_aug import CPU_ONLY_METHODS
from pathfm.errors import ConfigError


def _worker_init(_worker_id: int) -> None:
    """One BLAS thread per worker: the small per-tile products must not oversubscribe the cores.
    (Leave OpenCV's thread count alone here: ``cv2.setNumThreads`` in a forked child whose parent already
    ran a parallel OpenCV call deadlocks, opencv-python-headless 5.0.0.)
    A scheduler's SIGTERM to the whole job is the training process's to handle (it saves the step,
    pathfm.ssl.termination): a worker ignores it and ends with its parent, as torch's workers do."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


class InfiniteBatchSampler(Sampler[list[int]]):
    """Yields the global sample indices of this rank's micro-batches, forever."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, start_sample: int = 0):
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if start_sample < 0:
            raise ConfigError(f"start_sample must be >= 0, got {start_sample}")
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start_sample

    def __iter__(self) -> Iterator[list[int]]:
        b, m = self.batch_size, 0
        while True:
            first = self.start + m * b * self.world_size + self.rank * b
            yield list(range(first, first + b))
            m += 1


class TrainLoader(DataLoader):
    """A torch DataLoader whose iteration also folds each batch's per-slide counts into
    ``loader.dataset.stats`` when the samples were drawn in worker processes, and applies the crops on
    the device when ``device_augment`` is set (``data.augment_on=device``)."""

    device_augment: DeviceAugment | None = None

    def __iter__(self):
        for batch in super().__iter__():
            if self.num_workers > 0:
                self.dataset.stats.merge(batch["slide_stats"])
            yield batch if self.device_augment is None else self.device_augment(batch)


def build_train_loader(cfg, rank: int = 0, world_size: int = 1, start_sample: int = 0,
                       dataset: OnlinePatchDataset | None = None,
                       device: torch.device | str | None = None) -> TrainLoader:
    """Validate the slides (all errors at once, before anything starts), then return the infinite loader.

    Each batch: ``global_crops`` (2B, 3, G, G) and ``local_crops`` (n_local * B, 3, L, L) float32,
    crop-major; ``n_images`` = B; ``tile_stats`` = {draws, accepted, rejected, skipped_slides} of the batch.
    Pass ``dataset`` to reuse already validated slides (e.g. a high-res stage with the same slides) and
    ``device``, the training device, to resolve ``data.augment_on=auto`` (device on CUDA; without a device,
    cpu) and to say where ``augment_on=device`` puts the crops (default: cpu tensors)."""
    augment_on = resolve_augment_on(cfg.data.augment_on, device,
                                    cpu_only=cfg.data.stain_aug.method in CPU_ONLY_METHODS)
    ds = dataset if dataset is not None else OnlinePatchDataset.from_config(cfg, progress=cfg.run.progress)
    ds.samples_per_step = cfg.data.batch_size * world_size * cfg.optim.grad_accum
    ds.photometric_ramp = cfg.data.crops.photometric_ramp  # a reused dataset takes this stage's ramp
    ds.augment_on = augment_on
    nw = int(cfg.data.num_workers)
    loader = TrainLoader(
        ds,
        batch_sampler=InfiniteBatchSampler(cfg.data.batch_size, rank, world_size, start_sample),
        collate_fn=collate_multicrop,
        num_workers=nw,
        persistent_workers=False,
        prefetch_factor=2 if nw > 0 else None,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context="fork" if nw > 0 else None,
        worker_init_fn=_worker_init if nw > 0 else None,
    )
    if augment_on == "device":
        loader.device_augment = DeviceAugment(cfg.data, device if device is not None else "cpu")
    return loader


def iterate_outside_rng(loader: DataLoader) -> Iterator[dict]:
    """Iterate ``loader`` without touching the global torch RNG: a DataLoader draws its base seed from it when
    its iterator starts (at the first ``next``); that draw is kept out of the training stream (drop path), so a
    resumed run continues that stream bit-identically."""
    it = iter(loader)
    with torch.random.fork_rng(devices=[]):
        first = next(it)
    return itertools.chain([first], it)
