"""Leakage audit: did a run pretrain on slides or patients that an evaluation task tests on?

Pathology benchmarks are often cut from the same public cohorts (TCGA above all) that foundation models
pretrain on; a patient in both inflates the score. The run's side is ``run_dir/training_slides.csv``
(:mod:`pathfm.data.provenance`: the manifest after the subset). The task's side is the id columns of
its labels CSV:

* slide ids  -- columns :data:`SLIDE_COLUMNS`;
* patient / case ids -- columns :data:`PATIENT_COLUMNS` and the task's ``group_column``.

Ids are compared case-insensitively, slide ids without folder or slide-file suffix. A TCGA barcode also
names its patient (its first 12 characters, ``TCGA-XX-XXXX``), so a TCGA slide id on either side is
compared at the patient level too. A task with none of these columns (e.g. ``crc``: only tile ids) cannot
be audited, and the audit says so rather than "no overlap". ``pathfm audit leakage RUN --task TASK``
prints the audit; analysis reports add it for every task a sweep evaluated.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.data.manifest import SLIDE_SUFFIXES
from pathfm.data.provenance import read_training_slides

SLIDE_COLUMNS = ("slide_id", "slide", "slide_name", "slide_barcode", "wsi", "wsi_id")
PATIENT_COLUMNS = ("patient_id", "patient", "case_id", "case", "patient_or_case", "case_submitter_id")
_TCGA_PATIENT = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:[-.]|$)", re.IGNORECASE)
SHOWN = 20  # overlapping ids listed in a summary line
_TASK_TAG = re.compile(r"(@\d+px)?(\[[^\]]*\])?$")  # the option tags pathfm.eval.evaluation.task_label appends


def tcga_patient(identifier: str) -> str | None:
    """The patient barcode ``TCGA-XX-XXXX`` a TCGA slide / sample / patient barcode starts with, else None."""
    m = _TCGA_PATIENT.match(identifier.strip())
    return m.group(1).upper() if m else None


def slide_key(slide_id: str) -> str:
    """A slide id as compared: no folder, no slide-file suffix, case-folded."""
    name = Path(slide_id.strip()).name
    for suffix in SLIDE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.casefold()


def patient_key(patient_id: str) -> str:
    """A patient / case id as compared: its TCGA patient barcode when it is one, case-folded."""
    return (tcga_patient(patient_id) or patient_id.strip()).casefold()


@dataclass
class IdSets:
    """Slide and patient ids of one side, each as ``{compared key: an original spelling}``; None = unknown."""

    slides: dict[str, str] | None = None
    patients: dict[str, str] | None = None


def id_sets(slide_ids: list[str | None], patient_ids: list[str | None]) -> IdSets:
    """Ids of one side from its slide and patient columns (None: the side has no such column at all); TCGA
    slide barcodes add their patients."""
    out = IdSets()
    if slide_ids is not None:
        out.slides = {slide_key(s): s.strip() for s in slide_ids if s and s.strip()}
    patients: dict[str, str] = {}
    for p in patient_ids or []:
        if p and p.strip():
            patients[patient_key(p)] = p.strip()
    for s in slide_ids or []:
        if s and (barcode := tcga_patient(s)):
            patients.setdefault(barcode.casefold(), barcode)
    if patient_ids is not None or patients:
        out.patients = patients
    return out


@dataclass
class LeakageAudit:
    task: str
    run: str
    train: IdSets
    test: IdSets
    slide_overlap: list[str] = field(default_factory=list)
    patient_overlap: list[str] = field(default_factory=list)

    @property
    def auditable(self) -> bool:
        """Whether at least one id level could be compared (the task has ids the run also records)."""
        return (self.test.slides is not None and self.train.slides is not None) or (
            self.test.patients is not None and bool(self.train.patients))

    @property
    def leaked(self) -> bool:
        return bool(self.slide_overlap or self.patient_overlap)

    def summary(self) -> str:
        """One line: ``no overlap (...)``, the overlapping ids, or why the task cannot be audited."""
        if not self.auditable and self.test.patients is not None:
            return (f"task {self.task}: not auditable: the task lists patient/case ids but the run's manifest has "
                    "no patient_id column (and no TCGA slide ids); add patient_id to the manifest")
        if not self.auditable:
            return (f"task {self.task}: not auditable: the task lists no slide, patient or case ids "
                    f"(columns {', '.join(SLIDE_COLUMNS + PATIENT_COLUMNS)} or its group_column)")
        parts = []
        if self.test.slides is not None:
            parts.append(f"{len(self.train.slides or {})} training slides vs {len(self.test.slides)} task slides")
        if self.test.patients is not None and self.train.patients:
            parts.append(f"{len(self.train.patients)} training patients vs {len(self.test.patients)} task patients/cases")
        compared = "; ".join(parts)
        if not self.leaked:
            return f"task {self.task}: no overlap ({compared})"
        shown = []
        for level, ids in (("slide", self.slide_overlap), ("patient", self.patient_overlap)):
            if ids:
                more = f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else ""
                shown.append(f"{len(ids)} {level}(s): {', '.join(ids[:SHOWN])}{more}")
        return f"task {self.task}: OVERLAP, {'; '.join(shown)} ({compared})"


def compare(train: IdSets, test: IdSets, *, task: str, run: str) -> LeakageAudit:
    """The overlap of two sides, level by level (pure)."""
    audit = LeakageAudit(task, run, train, test)
    if train.slides is not None and test.slides is not None:
        audit.slide_overlap = sorted(train.slides[k] for k in train.slides.keys() & test.slides.keys())
    if train.patients and test.patients is not None:
        audit.patient_overlap = sorted(train.patients[k] for k in train.patients.keys() & test.patients.keys())
    return audit


def run_ids(run_dir: str | Path) -> IdSets:
    """The slides and patients a run trained on (its ``training_slides.csv``)."""
    rows = read_training_slides(run_dir)
    return id_sets([r["slide_id"] for r in rows], [r["patient_id"] for r in rows if r.get("patient_id")])


def task_ids(task) -> IdSets:
    """The slide and patient/case ids of a task (:func:`pathfm.eval.tasks.get_task` name, file or Task)."""
    from pathfm.eval.tasks import Task, get_task

    task = task if isinstance(task, Task) else get_task(task)
    if not task.spec.labels:  # one folder per class: no ids beyond the tiles' names
        return IdSets()
    with open(task.source_file, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    slide_cols = [c for c in header if c.lower() in SLIDE_COLUMNS]
    patient_cols = [c for c in header if c.lower() in PATIENT_COLUMNS or c == task.spec.group_column]
    slides = [r[c] for r in rows for c in slide_cols] if slide_cols else None
    patients = [r[c] for r in rows for c in patient_cols] if patient_cols else None
    return id_sets(slides, patients)


def audit_run(run_dir: str | Path, task) -> LeakageAudit:
    """Audit one run against one task (a name, a task file or a loaded Task)."""
    return audit_runs([run_dir], task)


def audit_runs(run_dirs: list[str | Path], task) -> LeakageAudit:
    """Audit the union of several runs' training slides (e.g. a sweep's trials) against one task."""
    from pathfm.eval.tasks import Task, get_task

    task = task if isinstance(task, Task) else get_task(task)
    merged = IdSets(slides={}, patients={})
    for d in run_dirs:
        ids = run_ids(d)
        merged.slides.update(ids.slides or {})
        merged.patients.update(ids.patients or {})
    where = str(run_dirs[0]) if len(run_dirs) == 1 else f"{len(run_dirs)} runs"
    return compare(merged, task_ids(task), task=task.name, run=where)


def leakage_markdown(run_dirs: list[Path], tasks: list[str]) -> str:
    """The report's leakage section: one line per task (``no overlap``, the overlap, or not auditable)."""
    from pathfm.eval.tasks import TaskError
    from pathfm.records.run_folder import TRAINING_SLIDES_FILE, RunFolder

    recorded = [d for d in run_dirs if RunFolder(d).training_slides.is_file()]
    if not run_dirs:
        return "not available: the results name no trial folders (no trial_dir column, or the folders are gone)"
    if not recorded:
        return (f"not available: none of the {len(run_dirs)} run folder(s) holds {TRAINING_SLIDES_FILE} "
                "(runs trained before pathfm recorded its training slides)")
    if not tasks:
        return "not available: the results hold no evaluated task"
    lines = [f"Training slides of {len(recorded)} of {len(run_dirs)} run(s) against each evaluated task "
             "(slide ids, and patient/case ids; TCGA barcodes also by patient):", ""]
    names = dict.fromkeys(_TASK_TAG.sub("", t) for t in tasks)  # crc@392px, crc[cls] -> crc (task_label's tags)
    for t in names:
        try:
            lines.append(f"- {audit_runs(recorded, t).summary()}")
        except TaskError as e:
            lines.append(f"- task {t}: not auditable: {e}")
    return "\n".join(lines)
