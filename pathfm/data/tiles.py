"""Labelled tile folders, as the evaluation tasks read them (``pathfm train`` reads whole-slide images, not tiles).

Two layouts:

* a folder with one sub-folder per class (``root/ADI/*.png``, ``root/TUM/*.jpg``; nested folders are
  searched, the class is the first folder level below ``root``);
* a CSV with columns ``path,label`` and optionally ``group`` (e.g. patient or case, for grouped splits;
  ``patient_id``, ``patient_or_case``, ``case`` are accepted as the group column too). Relative paths
  are relative to the CSV's folder. Extra columns are ignored.

Classes are sorted by name; ``labels[i]`` is the index of sample ``i``'s class in ``classes``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pathfm.errors import PathfmError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
GROUP_COLUMNS = ("group", "patient_id", "patient_or_case", "case", "patient")


class TileFolder:
    """``TileFolder(source, transform=None)``; ``ds[i] -> (image, label)`` where image is a PIL RGB
    image, or ``transform(image)`` when a transform is given."""

    def __init__(self, source: str | Path, transform: Callable | None = None):
        from pathfm.config import resolve_path

        src = resolve_path(source)
        if not src.exists():
            raise PathfmError(f"tile folder {source}: does not exist (give a folder per class or a CSV path,label)")
        self.source = src
        self.transform = transform
        if src.is_dir():
            paths, names, groups = self._scan_folder(src)
        else:
            paths, names, groups = self._read_csv(src)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PathfmError(f"{src}: {len(missing)} tile file(s) do not exist:\n  " + "\n  ".join(missing[:20])
                              + ("\n  ..." if len(missing) > 20 else ""))
        self.paths: list[Path] = paths
        self.classes: list[str] = sorted(set(names))
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([index[n] for n in names], dtype=np.int64)
        self.groups: np.ndarray | None = None if groups is None else np.asarray(groups, dtype=object)

    @staticmethod
    def _scan_folder(root: Path):
        paths, names = [], []
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    paths.append(f)
                    names.append(cls_dir.name)
        if not paths:
            raise PathfmError(f"{root}: no image files in class sub-folders (expected root/<class>/<tile>.png)")
        return paths, names, None

    @staticmethod
    def _read_csv(path: Path):
        if path.suffix.lower() != ".csv":
            raise PathfmError(f"{path}: expected a folder of class sub-folders or a .csv with path,label")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"path", "label"} <= set(rows[0]):
            found = ", ".join(rows[0]) if rows else "no rows"
            raise PathfmError(f"{path}: the CSV needs columns path,label[,group] (found: {found})")
        gcol = next((c for c in GROUP_COLUMNS if c in rows[0]), None)
        paths, names, groups = [], [], []
        for i, r in enumerate(rows, start=2):
            if not (r.get("path") or "").strip() or not (r.get("label") or "").strip():
                raise PathfmError(f"{path} row {i}: empty path or label")
            p = Path(r["path"].strip()).expanduser()
            paths.append(p if p.is_absolute() else (path.parent / p))
            names.append(r["label"].strip())
            if gcol:
                groups.append((r.get(gcol) or "").strip() or f"row{i}")
        return paths, names, (groups if gcol else None)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int):
        """The tile as a PIL RGB image (PathfmError naming the file if it cannot be decoded)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.paths[i]) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise PathfmError(f"{self.paths[i]}: cannot decode this tile image: {e}") from None

    def __getitem__(self, i: int):
        img = self.load(i)
        return (self.transform(img) if self.transform else img), int(self.labels[i])

    def class_counts(self) -> dict[str, int]:
        return {c: int((self.labels == k).sum()) for k, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        return f"TileFolder({self.source}, {len(self)} tiles, classes={self.classes})"
