"""Decode a task's tiles into one uint8 array (resized, optionally cut into crops), cached in memory.

Decoding happens before any model runs, so an unreadable tile is reported (by path) before expensive work.
The in-memory cache makes the in-training fast probe cost one forward pass per call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pathfm.eval.tasks import Task, TaskError, make_folds

_CACHE: "OrderedDict[tuple, TaskSamples]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 8


@dataclass(frozen=True)
class TaskSamples:
    """What the model sees: ``images`` uint8 (M, S, S, 3); ``tile`` maps each sample to its tile."""

    task: Task
    images: np.ndarray
    labels: np.ndarray
    tile: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def folds(self, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """Folds made over tiles (grouped by case where the task has groups), expanded to samples: the
        crops of one tile, and the tiles of one case, always share a fold."""
        t = self.task
        tile_folds = make_folds(t.labels, t.groups, t.spec.n_folds, seed, t.is_test)
        out = []
        for tr, te in tile_folds:
            out.append((np.flatnonzero(np.isin(self.tile, tr)), np.flatnonzero(np.isin(self.tile, te))))
        return out

    def sample_groups(self) -> np.ndarray:
        """Per-sample group for grouped inner cross-validation (the case if known, else the tile)."""
        if self.task.groups is not None:
            return self.task.groups[self.tile]
        return self.tile.astype(str)


def decode_tile(path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3); bicubic with antialiasing when the tile is not already ``size`` px."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                w, h = im.size
                if w != h:  # centre-crop to a square first (keeps the physical scale isotropic)
                    s = min(w, h)
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise TaskError(f"cannot read tile {path}: {e}. Replace or remove it (and its row in the labels CSV)") from None


def load_samples(task: Task, *, progress: bool = False) -> TaskSamples:
    """All samples of ``task`` (cached per task fingerprint). Crops of ``input_size`` px are cut from each
    tile resized to ``input_size * crops_per_side``."""
    key = (task.fingerprint, task.spec.input_size, task.spec.crops_per_side)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    c, s = task.spec.crops_per_side, task.spec.input_size
    it = task.paths
    if progress:
        from pathfm.progress import progress_bar

        it = progress_bar(it, desc=f"decode {task.name}", unit="tile", leave=False)
    images = np.empty((len(task) * c * c, s, s, 3), dtype=np.uint8)
    for i, path in enumerate(it):
        tile = decode_tile(path, s * c)
        for a in range(c):
            for b in range(c):
                images[i * c * c + a * c + b] = tile[a * s:(a + 1) * s, b * s:(b + 1) * s]
    tile_index = np.repeat(np.arange(len(task)), c * c)
    out = TaskSamples(task, images, task.labels[tile_index], tile_index)
    with _CACHE_LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return out
