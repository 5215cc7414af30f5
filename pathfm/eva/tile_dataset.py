"""An eva dataset over a pathfm tile task (a bundled task such as ``crc``/``pcam``, or a task YAML/CSV), so
eva's own pipeline runs on tiles laid out the way pathfm reads them (eva's CRC/BACH/... classes insist on the
full public datasets' tile counts).

``split="train"`` is the training part of fold ``fold`` of pathfm's own folds (:func:`pathfm.eval.tasks.
make_folds`, same ``seed``), ``split="val"`` its held-out part: eva then fits and scores its head on exactly
the tiles pathfm's probe uses for that fold. Tiles are decoded by pathfm (:func:`pathfm.eval.tiles.
decode_tile`: centre square, bicubic to the task's ``input_size``), so eva's transforms see the pixels
pathfm's feature extractor sees.
"""

from __future__ import annotations

import os
from typing import Callable, Literal

import numpy as np
import torch
from torchvision import tv_tensors

from eva.vision.data.datasets import vision
from pathfm.errors import ConfigError
from pathfm.eval.tasks import get_task, make_folds
from pathfm.eval.tiles import decode_tile

SPLITS = ("train", "val")


def fold_indices(task, split: str, fold: int, seed: int) -> np.ndarray:
    """Tile indices of ``split`` in fold ``fold`` of ``task`` (pathfm's folds)."""
    if split not in SPLITS:
        raise ConfigError(f"pathfm task dataset: split '{split}' is not one of {', '.join(SPLITS)}")
    folds = make_folds(task.labels, task.groups, task.spec.n_folds, seed, task.is_test)
    if not 0 <= fold < len(folds):
        raise ConfigError(f"task '{task.name}' has {len(folds)} fold(s); fold {fold} does not exist")
    train, test = folds[fold]
    return np.sort(train if split == "train" else test)


class PathfmTaskTiles(vision.VisionDataset[tv_tensors.Image, torch.Tensor]):
    """Tiles of one split of one fold of a pathfm task (see the module docstring)."""

    def __init__(self, task: str, split: Literal["train", "val"], fold: int = 0, seed: int = 0,
                 transforms: Callable | None = None) -> None:
        super().__init__(transforms=transforms)
        self._task_name = task
        self._split = split
        self._fold = int(fold)
        self._seed = int(seed)
        self._task = None
        self._index = np.zeros(0, dtype=np.int64)
        self._root = ""

    def configure(self) -> None:
        task = get_task(self._task_name)
        if task.spec.crops_per_side != 1:
            raise ConfigError(f"task '{task.name}' cuts tiles into crops; eva scores whole tiles: use a task "
                              "without crops_per_side")
        self._task = task
        self._root = os.path.commonpath([str(p.parent) for p in task.paths])
        self._index = fold_indices(task, self._split, self._fold, self._seed)

    def validate(self) -> None:
        if len(self._index) == 0:
            raise ConfigError(f"task '{self._task_name}' fold {self._fold}: the {self._split} split is empty")

    @property
    def classes(self) -> list[str]:
        return list(get_task(self._task_name).class_names) if self._task is None else list(self._task.class_names)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def filename(self, index: int) -> str:
        return os.path.relpath(self._task.paths[self._index[index]], self._root)

    def load_data(self, index: int) -> tv_tensors.Image:
        pixels = decode_tile(self._task.paths[self._index[index]], self._task.spec.input_size)
        return tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1))

    def load_target(self, index: int) -> torch.Tensor:
        return torch.tensor(int(self._task.labels[self._index[index]]), dtype=torch.long)

    def __len__(self) -> int:
        return len(self._index)
