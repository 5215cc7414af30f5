"""Which slides (and patients) a run trained on: ``run_dir/training_slides.csv``, written by the trainer.

The list is the manifest after the nested subset (``data.n_slides``, ``data.subset_seed``,
``data.group_by_patient``): :func:`training_entries` is the one place that selection is made, for the
data loader and for this record alike. Columns: ``slide_id, patient_id, cohort, path``. The leakage
audit (:mod:`pathfm.eval.leakage`) compares it with an evaluation task's slide / patient / case ids.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pathfm.data.cohorts import select_cohorts
from pathfm.data.manifest import SlideEntry, load_manifest
from pathfm.data.subsets import nested_subset
from pathfm.errors import PathfmError
from pathfm.io import atomic_path
from pathfm.records import RunFolder

TRAINING_SLIDES_COLUMNS = ("slide_id", "patient_id", "cohort", "path")


def training_entries(data_cfg) -> list[SlideEntry]:
    """The slides a run with this ``data`` config trains on (manifest, its ``data.cohorts``, then the nested
    subset)."""
    d = data_cfg
    entries = select_cohorts(load_manifest(d.slides), d.cohorts, d.slides)
    return nested_subset(entries, d.n_slides, d.subset_seed, d.group_by_patient)


def write_training_slides(entries: list[SlideEntry], run_dir: str | Path) -> Path:
    """Write ``run_dir/training_slides.csv`` atomically (one row per slide, sorted by slide_id)."""
    out = RunFolder(run_dir).training_slides
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(TRAINING_SLIDES_COLUMNS)
            for e in sorted(entries, key=lambda e: e.slide_id):
                w.writerow([e.slide_id, e.patient_id or "", e.cohort or "", str(e.path)])
    return out


def read_training_slides(run_dir: str | Path) -> list[dict[str, str | None]]:
    """The rows of ``run_dir/training_slides.csv`` (empty strings read as None); a clear error without it."""
    path = RunFolder(run_dir).training_slides
    if not path.is_file():
        raise PathfmError(f"{path} does not exist: the run predates the training-slide record or is not a "
                          "pathfm run directory; resuming it (pathfm train resume=RUN) writes the file")
    with open(path, newline="") as f:
        return [{k: (v or None) for k, v in row.items()} for row in csv.DictReader(f)]
