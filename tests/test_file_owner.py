"""One owner for every file name of a run folder and a sweep folder (:mod:`pathfm.records`): its paths and
records behave as the files on disk always were (the names themselves are written out here, so a renamed file
fails a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathfm.records import (RunFolder, SweepFolder, TrialRecord, checkpoint_step, optuna_trial_dirname,
                            optuna_trial_number, read_sweep_meta, read_trial, trial_dirname, update_trial)


def test_the_owner_keeps_the_names_on_disk():
    """Old runs and sweeps still load: the names are those pathfm always wrote."""
    run = RunFolder("/r")
    assert [p.name for p in (run.config, run.metrics, run.teacher_backbone, run.done, run.training_slides,
                             run.guard, run.tracking, run.eval, run.trial, run.config_changes)] == [
        "config.yaml", "metrics.jsonl", "teacher_backbone.pt", "DONE", "training_slides.csv", "guard.json",
        "tracking.json", "eval.parquet", "trial.json", "config_changes.jsonl"]
    assert run.checkpoint(10) == Path("/r/checkpoints/step_00000010.pt")
    assert run.checkpoint(10, sharded=True) == Path("/r/checkpoints/step_00000010.dcp")
    assert run.averaged_backbone(3) == Path("/r/teacher_backbone_avg3.pt")
    assert run.averaged_backbone(3, "highres") == Path("/r/teacher_backbone_avg3_highres.pt")
    assert run.export_dir("hf") == Path("/r/export/hf") and run.eval_cache == Path("/r/eval_cache")
    sweep = SweepFolder("/s")
    assert [p.name for p in (sweep.spec, sweep.trials_file, sweep.meta, sweep.results, sweep.study_plan,
                             sweep.reference_info, sweep.optuna_db)] == [
        "sweep_spec.yaml", "trials.json", "sweep_meta.json", "results.parquet", "study_plan.json", "reference.json",
        "optuna.db"]
    assert sweep.reference_eval == Path("/s/reference/eval.parquet")
    assert sweep.reference_cache("k") == Path("/.pathfm_reference/k.parquet")
    assert sweep.trial_dir("a_00001") == Path("/s/trial_a_00001") == Path("/s") / trial_dirname("a_00001")
    assert optuna_trial_dirname(3) == "optuna_00003" and optuna_trial_number("optuna_00003") == 3


def test_checkpoints_are_listed_by_step_and_other_files_ignored(tmp_path: Path):
    run = RunFolder(tmp_path)
    assert run.checkpoints() == []
    run.checkpoints_dir.mkdir()
    for name in ("step_00000020.pt", "step_00000003.pt", "step_00000003.pt.sha256", "step_00000010.dcp",
                 ".step_00000030.dcp.partial", "step_00000004.pt.unusable", "notes.txt"):
        (run.checkpoints_dir / name).mkdir() if name.endswith((".dcp", ".partial")) else (run.checkpoints_dir / name).touch()
    assert [(s, p.name) for s, p in run.checkpoints()] == [
        (3, "step_00000003.pt"), (10, "step_00000010.dcp"), (20, "step_00000020.pt")]
    assert checkpoint_step("step_00000003.pt.sha256") is None


def test_a_run_folder_is_found_from_a_file_in_it(tmp_path: Path):
    run = RunFolder(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    assert RunFolder.around(run.checkpoint(5)) is None
    run.metrics.write_text("")
    assert RunFolder.around(run.checkpoint(5)).path == run.path
    assert RunFolder.around(run.teacher_backbone).path == run.path


def test_a_trial_record_round_trips_and_keeps_what_it_does_not_know(tmp_path: Path):
    raw = {"trial_id": "x_00000", "index": 0, "status": "RUNNING", "error": None, "params": {"kde_weight": 0.1},
           "added_by_a_later_pathfm": [1, 2]}
    RunFolder(tmp_path).trial.write_text(json.dumps(raw))
    rec = TrialRecord.read(tmp_path)
    assert (rec.trial_id, rec.index, rec.status, rec.params) == ("x_00000", 0, "RUNNING", {"kde_weight": 0.1})
    assert rec.extra == {"added_by_a_later_pathfm": [1, 2]}
    new = update_trial(tmp_path, status="TERMINATED", objective={"eval/mean_balanced_accuracy": 0.6})
    on_disk = read_trial(tmp_path)
    assert on_disk == dict(raw, status="TERMINATED", objective={"eval/mean_balanced_accuracy": 0.6})  # "error": null kept
    assert new.status == "TERMINATED" and TrialRecord.from_dict(new.to_dict()) == new
    with pytest.raises(TypeError, match="statuss"):
        update_trial(tmp_path, statuss="ERROR")
    assert read_trial(tmp_path) == on_disk  # a refused update writes nothing


def test_unreadable_trial_records_read_as_none(tmp_path: Path):
    assert TrialRecord.read(tmp_path) is None and read_trial(tmp_path) is None
    RunFolder(tmp_path).trial.write_text("{not json")
    assert TrialRecord.read(tmp_path) is None


def test_a_sweep_folder_lists_its_trials_by_index(tmp_path: Path):
    sweep = SweepFolder(tmp_path)
    for name, index in (("trial_b", 1), ("trial_a", 2), ("optuna_00000", None), ("trial_c", 0)):
        update_trial(tmp_path / name, trial_id=name, index=index)
    (tmp_path / "trial_broken").mkdir()
    RunFolder(tmp_path / "trial_broken").trial.write_text("{")
    (tmp_path / "reference").mkdir()  # no trial.json: not a trial
    assert [p.name for p in sweep.trial_dirs()] == ["trial_c", "trial_b", "trial_a", "optuna_00000", "trial_broken"]
    assert sweep.trials()[-1][1] == TrialRecord()
    assert sweep.ray_trial_names() == {"trial_a", "trial_b", "trial_c", "trial_broken"}


def test_sweep_records_read_back_and_fail_clearly(tmp_path: Path):
    sweep = SweepFolder(tmp_path)
    assert sweep.read_meta() == {} == read_sweep_meta(tmp_path) and sweep.read_reference() == {}
    assert sweep.read_trials_file() is None and sweep.read_study_plan() is None and not sweep.holds_sweep()
    sweep.write_trials([{"index": 0}])
    sweep.write_meta({"sweep": "s"})
    sweep.write_reference({"status": "DONE"})
    assert sweep.read_trials_file() == [{"index": 0}] and sweep.read_meta() == {"sweep": "s"}
    assert sweep.read_reference() == {"status": "DONE"}
    sweep.trials_file.write_text("{")
    with pytest.raises(Exception, match=r"trials\.json: not readable as JSON.*sweep_spec\.yaml"):
        sweep.read_trials_file()
    (tmp_path / "tuner.pkl").touch()
    assert sweep.holds_sweep()
