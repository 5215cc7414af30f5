"""A sweep trial's record, ``trial.json`` in its folder: :class:`TrialRecord` is its typed form.

Written by the trial as it runs (:func:`update_trial`: read-modify-write, atomic; a field name that is not a
TrialRecord field is a TypeError, so no writer invents a key a reader does not know), completed by the driver
when the trial process could not (:mod:`pathfm.sweeps.runner`), read by collection, status and the analysis.
A file written by another pathfm version keeps the keys this one does not know (``extra``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pathfm.io import atomic_write_json
from pathfm.records.run_folder import RunFolder


@dataclass
class TrialRecord:
    """What ``trial.json`` holds (every field may be missing: None)."""

    # what the trial is
    trial_id: str | None = None
    sweep: str | None = None
    index: int | None = None  # its place in trials.json (None: an adaptive search's sample)
    arm: str | None = None
    arm_labels: dict[str, Any] | None = None
    seed: int | None = None  # the replicate (pairs arms in the analysis)
    train_seed: int | None = None  # cfg.seed (differs from seed with an arm's seed_offset)
    params: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    # how it went: RUNNING | TERMINATED | STOPPED | ERROR
    status: str | None = None
    error: str | None = None
    traceback: str | None = None
    stopped_by: str | None = None  # scheduler | guard | trial_time_s
    stop_reason: str | None = None  # a guard's reason: collapsed | diverged | probe_dropped
    guard: dict[str, Any] | None = None  # the guard's guard.json
    objective: dict[str, float] | None = None
    # attempts and where they ran
    attempts: int | None = None
    started_at: float | None = None
    attempt_started_at: float | None = None
    ended_at: float | None = None
    restored_from_step: int | None = None
    hostname: str | None = None
    node_id: str | None = None
    hangs: int | None = None
    last_hang: str | None = None
    # cost
    gpus: float | None = None
    resources: dict[str, Any] | None = None
    total_steps: int | None = None
    final_step: int | None = None
    tiles_seen: int | None = None
    torch_threads: int | None = None
    train_time_s: float | None = None
    first_step_latency_s: float | None = None
    wall_time_s: float | None = None
    gpu_hours: float | None = None
    # keys this version does not know (a file from another version), kept as they are
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls)) - {"extra"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        known = cls.field_names()
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON content (fields that are None left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    @classmethod
    def read(cls, trial_dir: str | Path) -> TrialRecord | None:
        """The record in ``trial_dir`` (None when it has none, or an unreadable one: a trial that never started,
        or a file being replaced)."""
        raw = read_trial(trial_dir)
        return cls.from_dict(raw) if isinstance(raw, dict) else None


def read_trial(trial_dir: str | Path) -> dict | None:
    """``trial.json`` as written (a dict; None if missing or unreadable), for tools and tests; pathfm's own
    code reads :meth:`TrialRecord.read`."""
    try:
        return json.loads(RunFolder(trial_dir).trial.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def update_trial(trial_dir: str | Path, **changes: Any) -> TrialRecord:
    """Set fields of ``trial_dir``'s record (read-modify-write, atomic; the keys already there are kept) and
    return the new record. A name that is not a :class:`TrialRecord` field is a TypeError."""
    unknown = sorted(set(changes) - TrialRecord.field_names())
    if unknown:
        raise TypeError(f"trial.json has no field {', '.join(unknown)} (pathfm.records.TrialRecord)")
    info = read_trial(trial_dir)
    info = dict(info) if isinstance(info, dict) else {}
    info.update(changes)
    atomic_write_json(RunFolder(trial_dir).trial, info)
    return TrialRecord.from_dict(info)
