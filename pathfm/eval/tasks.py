"""Evaluation tasks as data: a labelled tile set, a split rule, an input size and an mpp.

A task is a :class:`TaskSpec` (YAML or a Python dict): tiles either in one folder per class
(``root/<class>/*.png``) or listed in a CSV (``path,label[,group][,split]``, paths relative to the CSV).
Split rules:

* ``kfold``        -- stratified k-fold over tiles (no patient ids known: CRC);
* ``group_kfold``  -- stratified k-fold where all tiles of one group (patient / case) share a fold;
* ``fixed``        -- a ``split`` column with ``train`` / ``test`` (one fold).

``crops_per_side: 2`` cuts every tile into 2x2 crops of ``input_size`` px; the crops of a tile always
share a fold (they are grouped by their tile), so they add samples without leaking.

Bundled tasks (real data in ``samples/``; licences and provenance in ``samples/README.md``):

* ``crc``       -- Kather CRC, 108 tiles, 8 classes at 224 px / 0.5 mpp, stratified 5-fold; the single BACK
  tile is excluded because one tile cannot be stratified over folds. Kept as it was, so old results compare;
* ``crc_crops`` -- the same tiles as four 112 px crops each;
* ``crc9``      -- ``crc`` plus 103 lossless CRC-VAL-HE-7K tiles (``labels_all.csv``): 212 unique tiles, all 9
  classes (13 BACK), stratified 5-fold; twice the test tiles per fold of ``crc``, so a fold's score spreads
  about 0.05 instead of 0.08-0.11 (measured, linear and kNN probes);
* ``osteo``     -- TCIA osteosarcoma, 60 tiles, 3 classes, 4 cases, folds grouped by case;
* ``pcam``      -- PatchCamelyon lymph-node patches, normal / tumor, fixed slide-disjoint split as published
  (400 train from PCam train, 800 test from PCam test, balanced). 96 px at 0.97 mpp resized to 98 px
  (7x7 patches of 14, ~0.95 mpp, next to the 1.0 mpp the configs train at); the test standard error is
  0.014 at the colour-histogram baseline's 0.80 balanced accuracy, 0.011 at 0.90. Patch-16 models need
  ``--resize 112`` (or 224).

Add your own with ``pathfm eval SOURCE --task my_task.yaml`` (or ``--task tiles.csv``: a CSV of
``path,label`` next to its tiles, stratified 5-fold). A task file, e.g. BRACS from your disk::

    name: bracs
    root: /data/BRACS_RoI/tiles          # relative paths: to this file's folder, the cwd, the repo root
    labels: labels.csv                   # omit for one sub-folder per class
    group_column: patient                # with split: group_kfold, a patient never spans two folds
    split: group_kfold                   # kfold | group_kfold | fixed (then split_column: train/test)
    n_folds: 5
    input_size: 224                      # tiles are resized (bicubic, antialiased) to this
    mpp: 0.5
    exclude_classes: []

Tasks check every class folder and fold before any model runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pathfm.config import SAMPLES_DIR, read_yaml, resolve_path
from pathfm.errors import PathfmError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class TaskError(PathfmError):
    """A task that cannot be evaluated (unknown name, bad file, empty class, too few samples for the folds)."""


class TaskSpec(BaseModel):
    """What a task file (YAML) says. Relative paths resolve against the task file's folder, then the cwd,
    then the repository root."""

    model_config = ConfigDict(extra="forbid")

    name: str
    root: str = Field(description="folder holding the tiles (one sub-folder per class when `labels` is unset)")
    labels: str | None = Field(None, description="CSV with one row per tile; paths relative to `root`")
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = Field(None, description="patient / case column (required by group_kfold)")
    split_column: str | None = Field(None, description="train/test column (required by fixed)")
    split: Literal["kfold", "group_kfold", "fixed"] = "kfold"
    n_folds: int = Field(5, ge=2)
    input_size: int = Field(224, ge=14, description="px of what the model sees (after cropping)")
    crops_per_side: int = Field(1, ge=1, le=8)
    mpp: float | None = Field(None, gt=0, description="microns per pixel of the input (documentation)")
    exclude_classes: list[str] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _split_columns(self) -> "TaskSpec":
        if self.split == "group_kfold" and not self.group_column:
            raise ValueError("split: group_kfold needs group_column (the patient / case column of the CSV)")
        if self.split == "fixed" and not self.split_column:
            raise ValueError("split: fixed needs split_column (a column with train / test)")
        if (self.group_column or self.split_column) and not self.labels:
            raise ValueError("group_column / split_column need a labels CSV")
        return self


_CRC = dict(
    name="crc",
    root=str(SAMPLES_DIR / "crc_he_tiles"),
    labels="labels.csv",
    split="kfold",
    n_folds=5,
    input_size=224,
    mpp=0.5,
    exclude_classes=["BACK"],
    description="Kather colorectal H&E (NCT-CRC-HE / CRC-VAL-HE-7K), 8 tissue classes, 224 px at 0.5 mpp, "
    "stratified 5-fold (no patient ids published); BACK has a single tile and is excluded",
)
BUNDLED: dict[str, dict] = {
    "crc": _CRC,
    "crc_crops": {
        **_CRC,
        "name": "crc_crops",
        "input_size": 112,
        "crops_per_side": 2,
        "description": "crc cut into four 112 px crops per tile (0.5 mpp); crops of a tile share a fold",
    },
    "crc9": {
        **_CRC,
        "name": "crc9",
        "labels": "labels_all.csv",
        "exclude_classes": [],
        "description": "crc plus 103 lossless CRC-VAL-HE-7K tiles: 212 unique tiles, all 9 classes (13 BACK), "
        "224 px at 0.5 mpp, stratified 5-fold",
    },
    "osteo": dict(
        name="osteo",
        root=str(SAMPLES_DIR / "osteosarcoma"),
        labels="labels.csv",
        group_column="patient_or_case",
        split="group_kfold",
        n_folds=4,
        input_size=224,
        mpp=4.6,
        description="TCIA osteosarcoma H&E (UTSW), non-tumor / necrotic / viable tumor; 1024 px tiles at 10x "
        "resized to 224 (~4.6 mpp); 4 cases, leave-one-case-out folds",
    ),
    "pcam": dict(
        name="pcam",
        root=str(SAMPLES_DIR / "pcam"),
        labels="labels.csv",
        split="fixed",
        split_column="split",
        input_size=98,
        mpp=0.95,
        description="PatchCamelyon lymph-node H&E, normal / tumor (centre 32 px); 96 px at 0.97 mpp resized to 98 "
        "(7x7 patches of 14, ~0.95 mpp); fixed slide-disjoint split, 400 train / 800 test, balanced",
    ),
    # the in-training probe's task: pcam's train rows only, so it never sees a tile that pcam, crc9 or osteo
    # test on (pathfm/eval/probe_overlap.py)
    "pcam_train": dict(
        name="pcam_train",
        root=str(SAMPLES_DIR / "pcam"),
        labels="labels_train.csv",
        split="kfold",
        n_folds=5,
        input_size=98,
        mpp=0.95,
        description="the 400 train patches of pcam (200 normal / 200 tumor), stratified 5-fold: an in-training "
        "probe task disjoint from the test tiles of every other bundled task",
    ),
}
TASKS: tuple[str, ...] = tuple(BUNDLED)


@dataclass(frozen=True)
class Task:
    """A loaded task: one entry per tile (crops are expanded later, by :mod:`pathfm.eval.tiles`)."""

    spec: TaskSpec
    paths: tuple[Path, ...]
    labels: np.ndarray  # int64 (n_tiles,)
    class_names: tuple[str, ...]
    groups: np.ndarray | None = None  # str (n_tiles,)
    is_test: np.ndarray | None = None  # bool (n_tiles,), fixed split only
    source_file: str = ""
    _fingerprint: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        """Hash of the spec and of every tile's path, size and mtime (a changed tile invalidates caches)."""
        return self._fingerprint


# ------------------------------------------------------------------------------------------ loading
def known_tasks() -> list[str]:
    return sorted(BUNDLED)


def get_task(name_or_path: str | Path | TaskSpec | Task, *, n_folds: int | None = None) -> Task:
    """A bundled task by name, a task YAML / CSV path, or a spec; validated (files readable-looking,
    classes non-empty, every class has at least as many tiles -- or groups -- as folds)."""
    if isinstance(name_or_path, Task):
        task = name_or_path
    else:
        spec = _spec_of(name_or_path)
        task = _load(spec)
    if n_folds is not None and n_folds != task.spec.n_folds:
        task = _load(task.spec.model_copy(update={"n_folds": n_folds}))
    check_folds(task)
    return task


def _spec_of(name_or_path: str | Path | TaskSpec) -> TaskSpec:
    if isinstance(name_or_path, TaskSpec):
        return name_or_path
    key = str(name_or_path)
    if key in BUNDLED:
        return TaskSpec(**BUNDLED[key])
    path = Path(key).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".csv") or path.exists():
        path = resolve_path(path)
        if not path.exists():
            raise TaskError(f"task file {path} does not exist")
        if path.suffix.lower() == ".csv":
            return _spec_validate({"name": path.stem, "root": str(path.parent), "labels": path.name}, str(path))
        tree = read_yaml(path)
        tree.setdefault("name", path.stem)
        for k in ("root",):
            if k in tree and not Path(str(tree[k])).expanduser().is_absolute():
                cand = (path.parent / str(tree[k])).resolve()
                tree[k] = str(cand if cand.exists() else resolve_path(str(tree[k])))
        return _spec_validate(tree, str(path))
    import difflib

    close = difflib.get_close_matches(key, known_tasks(), n=2)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise TaskError(
        f"unknown task '{key}'. Known tasks: {', '.join(known_tasks())}; or give a task file "
        f"(.yaml with name/root/labels/split, or a .csv of path,label).{hint}"
    )


def _spec_validate(tree: dict, source: str) -> TaskSpec:
    try:
        return TaskSpec.model_validate(tree)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg'].removeprefix('Value error, ')}"
                 for err in e.errors()]
        raise TaskError(f"task file {source} is invalid:\n" + "\n".join(lines)) from None


def _load(spec: TaskSpec) -> Task:
    root = resolve_path(spec.root)
    if not root.is_dir():
        raise TaskError(f"task '{spec.name}': root folder {root} does not exist")
    if spec.labels:
        rows, source = _rows_from_csv(spec, root)
    else:
        rows, source = _rows_from_folders(spec, root), str(root)
    excluded = set(spec.exclude_classes)
    rows = [r for r in rows if r["label"] not in excluded]
    if not rows:
        raise TaskError(f"task '{spec.name}': no tiles found in {source}")
    class_names = tuple(sorted({r["label"] for r in rows}))
    if len(class_names) < 2:
        raise TaskError(f"task '{spec.name}': needs at least 2 classes, found {list(class_names)} in {source}")
    index = {c: i for i, c in enumerate(class_names)}
    paths = tuple(r["path"] for r in rows)
    for p in paths:
        if not p.is_file():
            raise TaskError(f"task '{spec.name}': tile {p} listed in {source} does not exist")
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    groups = np.array([r["group"] for r in rows]) if spec.group_column else None
    is_test = None
    if spec.split == "fixed":
        values = [r["split"].strip().lower() for r in rows]
        bad = sorted(set(values) - {"train", "test"})
        if bad:
            raise TaskError(f"task '{spec.name}': column '{spec.split_column}' of {source} must be train/test, got {bad}")
        is_test = np.array([v == "test" for v in values])
    h = hashlib.sha256(spec.model_dump_json().encode())
    for r in rows:
        st = r["path"].stat()
        h.update(f"{r['path']}|{r['label']}|{r.get('group')}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return Task(spec, paths, labels, class_names, groups, is_test, source, h.hexdigest()[:16])


def _rows_from_csv(spec: TaskSpec, root: Path) -> tuple[list[dict], str]:
    csv_path = Path(spec.labels)
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    if not csv_path.is_file():
        raise TaskError(f"task '{spec.name}': labels CSV {csv_path} does not exist")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        need = [spec.path_column, spec.label_column] + [c for c in (spec.group_column, spec.split_column) if c]
        missing = [c for c in need if c not in header]
        if missing:
            raise TaskError(f"{csv_path}: missing column(s) {missing}; header is {header}")
        rows = []
        for i, rec in enumerate(reader, start=2):
            label = (rec[spec.label_column] or "").strip()
            rel = (rec[spec.path_column] or "").strip()
            if not label or not rel:
                raise TaskError(f"{csv_path} line {i}: empty path or label")
            p = Path(rel)
            rows.append({
                "path": p if p.is_absolute() else csv_path.parent / p,
                "label": label,
                "group": (rec[spec.group_column] or "").strip() if spec.group_column else None,
                "split": rec[spec.split_column] if spec.split_column else None,
            })
    return rows, str(csv_path)


def _rows_from_folders(spec: TaskSpec, root: Path) -> list[dict]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise TaskError(f"task '{spec.name}': {root} has no class sub-folders (expected {root}/<class>/*.png)")
    rows = []
    for d in class_dirs:
        if d.name in spec.exclude_classes:
            continue
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise TaskError(
                f"task '{spec.name}': class folder {d} is empty (no {', '.join(IMAGE_SUFFIXES)} files); "
                f"add tiles or remove the folder / list it in exclude_classes"
            )
        rows += [{"path": p, "label": d.name, "group": None, "split": None} for p in files]
    return rows


# ------------------------------------------------------------------------------------------- folds
def check_folds(task: Task) -> None:
    """Every class needs at least ``n_folds`` tiles (or groups, for group_kfold) so each fold can see it."""
    spec = task.spec
    if spec.split == "fixed":
        for part, mask in (("train", ~task.is_test), ("test", task.is_test)):
            if not mask.any():
                raise TaskError(f"task '{task.name}': the fixed split has no {part} tiles ({task.source_file})")
        return
    k = spec.n_folds
    counts = np.bincount(task.labels, minlength=task.n_classes)
    few = [f"{task.class_names[c]} ({counts[c]})" for c in range(task.n_classes) if counts[c] < k]
    if few:
        raise TaskError(
            f"task '{task.name}': class(es) {', '.join(few)} have fewer tiles than the {k} folds; "
            f"add tiles, lower n_folds, or list them in exclude_classes"
        )
    if spec.split == "group_kfold":
        n_groups = len(set(task.groups.tolist()))
        if n_groups < k:
            raise TaskError(
                f"task '{task.name}': {n_groups} groups ('{spec.group_column}') cannot fill {k} folds; "
                f"use n_folds <= {n_groups}"
            )
        for c in range(task.n_classes):
            g = set(task.groups[task.labels == c].tolist())
            if len(g) < 2:
                warnings.warn(
                    f"task '{task.name}': class {task.class_names[c]} occurs in one {spec.group_column} only; "
                    "the fold holding it has no training example of it",
                    stacklevel=2,
                )


def make_folds(labels: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int,
               is_test: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) pairs: stratified k-fold, stratified *grouped* k-fold (a group never spans two
    folds), or the fixed split. Seeded: the same inputs give the same folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n = len(labels)
    if is_test is not None:
        idx = np.arange(n)
        return [(idx[~is_test], idx[is_test])]
    x = np.zeros((n, 1))
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return [(tr, te) for tr, te in splitter.split(x, labels)]
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [(tr, te) for tr, te in splitter.split(x, labels, groups)]


def task_summary(task: Task) -> dict:
    counts = np.bincount(task.labels, minlength=task.n_classes)
    return {
        "name": task.name,
        "tiles": len(task),
        "classes": dict(zip(task.class_names, counts.tolist())),
        "split": task.spec.split,
        "n_folds": task.spec.n_folds if task.spec.split != "fixed" else 1,
        "groups": len(set(task.groups.tolist())) if task.groups is not None else None,
        "input_size": task.spec.input_size,
        "crops_per_side": task.spec.crops_per_side,
        "mpp": task.spec.mpp,
    }


def describe(task: Task) -> str:
    return json.dumps(task_summary(task))
