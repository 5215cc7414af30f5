"""One owner for every file name of a run folder and a sweep folder (:mod:`pathfm.records`): no other module of
``pathfm/`` spells one (a grep over the source, read with ``ast``: docstrings and comments may name a file,
code may not build a path from a name it spells), and the owner's paths and records behave as the files on disk
always were (the names themselves are written out here, so a renamed file fails a test)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from pathfm.config import REPO_ROOT
from pathfm.records import (RunFolder, SweepFolder, TrialRecord, checkpoint_step, optuna_trial_dirname,
                            optuna_trial_number, read_sweep_meta, read_trial, trial_dirname, update_trial)
from pathfm.records import run_folder, sweep_folder

PACKAGE = REPO_ROOT / "pathfm"
OWNER = PACKAGE / "records"
NAMES = run_folder.NAMES + sweep_folder.NAMES
PREFIXES = run_folder.PREFIXES + sweep_folder.PREFIXES
#: names that are also ordinary words (a status "DONE", the verb "eva", a backend called "tensorboard"): only
#: their use in a path counts
WORDS = {n for n in NAMES if "." not in n}
FOLDER_VARIABLES = {"run_dir", "sweep_dir", "trial_dir"}
#: (module, name): a name that is not ours in that module, with the reason
NOT_OURS = {("pathfm/backbone/foreign_weights.py", "checkpoints"): "torch hub's own folder (torch.hub.get_dir())"}
PATH_CALLS = {"Path", "PurePath", "joinpath", "join", "with_name"}


def docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def in_path(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """``node`` is an operand of ``/`` or an argument of Path(...) / .joinpath(...) / .with_name(...)."""
    parent = parents.get(id(node))
    if isinstance(parent, ast.JoinedStr):
        parent = parents.get(id(parent))
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call):
        f = parent.func
        return (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "") in PATH_CALLS
    return False


def spelled_names(text: str, node: ast.AST, parents: dict[int, ast.AST]) -> list[str]:
    """The owned names a string constant spells as a file name: the whole string (a word such as DONE only
    where it builds a path), a path component (``.../eval.parquet``, ``lost_trials/...``), or the start of a
    numbered name (``f"step_{step:08d}.pt"``, ``"step_*.pt"``)."""
    found = []
    for name in NAMES:
        n = re.escape(name)
        if name in WORDS:
            spelled = (text == name and in_path(node, parents)) or re.search(rf"(^|/){n}/|/{n}($|[\s\"'`)])", text)
        else:
            spelled = text == name or text.startswith(name + "/") or "/" + name in text
        if spelled:
            found.append(name)
    found += [prefix + "*" for prefix in PREFIXES if re.match(rf"\^?{re.escape(prefix)}($|[*(\\\[])", text)]
    return found


def offences(path: Path, root: Path = REPO_ROOT) -> list[str]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), rel)
    docs = docstring_nodes(tree)
    parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            out += [f"{rel}:{node.lineno} spells {name!r}" for name in spelled_names(node.value, node, parents)
                    if (rel, name) not in NOT_OURS]
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                and isinstance(node.right, (ast.Constant, ast.JoinedStr))
                and isinstance(node.left, (ast.Name, ast.Attribute))
                and (node.left.id if isinstance(node.left, ast.Name) else node.left.attr) in FOLDER_VARIABLES):
            out.append(f"{rel}:{node.lineno} joins a name onto a run or sweep folder: {ast.unparse(node)}")
    return sorted(out, key=lambda line: int(line.split(":")[1].split(" ")[0]))


def test_no_module_outside_the_owner_spells_a_run_or_sweep_folder_file_name():
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if OWNER not in p.parents]
    found = [line for p in files for line in offences(p)]
    assert found == [], "ask pathfm.records (RunFolder / SweepFolder / TrialRecord) for the path:\n" + "\n".join(found)


def test_the_grep_knows_every_name_the_owner_declares():
    """A name added to the owner is forbidden elsewhere at once (every ``*_FILE`` / ``*_DIR`` constant is in NAMES),
    and the names a review found typed out across modules are among them."""
    for module in (run_folder, sweep_folder):
        declared = {v for k, v in vars(module).items()
                    if k.endswith(("_FILE", "_DIR", "_MARKER")) and isinstance(v, str)}
        assert declared == set(module.NAMES), module.__name__
    assert {"metrics.jsonl", "config.yaml", "teacher_backbone.pt", "DONE", "checkpoints", "trial.json", "eval.parquet",
            "results.parquet", "sweep_meta.json", "sweep_spec.yaml", "trials.json", "study_plan.json",
            "training_slides.csv", "guard.json", "tracking.json", "reference"} <= set(NAMES)
    assert {"step_", "trial_", "optuna_"} <= set(PREFIXES)


def test_the_grep_sees_each_way_of_spelling_a_name(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""A docstring may name metrics.jsonl."""\n'
                   'a = run / "metrics.jsonl"\n'
                   'b = f"{x}/trial.json"\n'
                   'c = Path(d, "DONE")\n'
                   'd = f"step_{s:08d}.pt"\n'
                   'e = run_dir / "anything_new.json"\n'
                   'f = ("lost_trials/" + n)\n'
                   'g = status == "DONE"  # a status, not a file\n'
                   'h = "a run folder holds metrics.jsonl"  # prose\n')
    found = offences(bad, tmp_path)
    assert [line.split(" ")[0] for line in found] == [f"bad.py:{n}" for n in (2, 3, 4, 5, 6, 7)], found


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
