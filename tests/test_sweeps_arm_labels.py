"""Arm labels travel with the sweep (spec arms -> sweep_meta.json and trial.json at launch) and become
``param.<label>`` columns; sweeps from before that still read the ablation's study_plan.json (fast, no Ray)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pathfm.ablations.expand import plan_for
from pathfm.io import append_jsonl, atomic_write_json
from pathfm.sweeps.collect import collect
from pathfm.records import sweep_meta


def _trial(sweep_dir: Path, i: int, arm: str, **extra) -> None:
    d = sweep_dir / f"trial_x_{i:05d}"
    append_jsonl(d / "metrics.jsonl", {"step": 1, "loss": 2.0 + i, "time_s": 1.0, "tiles_seen": 4})
    atomic_write_json(d / "trial.json", {"trial_id": f"x_{i:05d}", "index": i, "arm": arm, "seed": 0, "params": {},
                                         "status": "TERMINATED", **extra})


def _labels_by_arm(sweep_dir: Path, col: str) -> list[tuple]:
    df = pl.read_parquet(collect(sweep_dir))
    return df.group_by("arm").agg(pl.col(col).first()).sort("arm").rows()


def test_a_study_compiles_its_arm_labels_and_hints_into_the_sweep_spec_and_meta():
    plan = plan_for("hed", "smoke")
    spec = plan.to_sweep_spec()
    assert {a.name: a.labels for a in spec.arms} == {a.name: a.labels for a in plan.arms}
    assert spec.meta.analysis == plan.analysis
    meta = sweep_meta(spec, [])
    assert meta["arm_labels"] == {a.name: a.labels for a in plan.arms if a.labels}
    assert meta.get("analysis", {}) == plan.analysis


def test_labels_recorded_in_trial_json_become_param_columns(tmp_path: Path):
    _trial(tmp_path, 0, "hed0", arm_labels={"hed_strength": 0.0})
    _trial(tmp_path, 1, "hed5", arm_labels={"hed_strength": 0.05})
    assert _labels_by_arm(tmp_path, "param.hed_strength") == [("hed0", 0.0), ("hed5", 0.05)]


def test_meta_labels_cover_arms_without_trials_yet_and_old_sweeps_read_the_study_plan(tmp_path: Path):
    meta_dir, old_dir = tmp_path / "meta", tmp_path / "old"
    atomic_write_json(meta_dir / "sweep_meta.json", {"sweep": "m", "arm_labels": {"a": {"k": 1}, "b": {"k": 2}}})
    _trial(meta_dir, 0, "a")  # arm b has not started: k still varies across the sweep's arms
    assert _labels_by_arm(meta_dir, "param.k") == [("a", 1)]
    atomic_write_json(old_dir / "study_plan.json", {"arms": [{"name": "a", "labels": {"k": "x"}},
                                                             {"name": "b", "labels": {"k": "y"}}]})
    _trial(old_dir, 0, "a")
    _trial(old_dir, 1, "b")
    assert _labels_by_arm(old_dir, "param.k") == [("a", "x"), ("b", "y")]
