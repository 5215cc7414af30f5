"""Object-store sweeps trial by trial (pathfm.infra.sweep_sync, pathfm.infra.folder_mirror), on real filesystems (no mocks): fsspec's
in-memory filesystem (the code path of the fsspec-served ``s3://``/``gs://``/``az://`` URIs) and pyarrow's local
filesystem behind a ``file:///`` URI (pyarrow's path, as for ``s3://``/``gs://``). A trial folder pushed and
pulled, incrementally; the store wins only when it holds a later attempt; the driver's gather and upload; and a
real trial whose staging folder vanished after a failure (as when Ray restarts it on another node) resumes from
the checkpoint it pushed, every step logged once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from fault_injection import fault_environment

from pathfm.errors import PathfmError
from pathfm.infra import object_store
from pathfm.infra.folder_mirror import FolderMirror, local_files, renames_atomically, stored_files
from pathfm.infra.sweep_sync import (SweepFilesMirror, gather_trials, mirror_sweep, set_aside_in_store,
                                     stage_from_store, synced_trial)
from pathfm.io import atomic_write_json, read_jsonl
from pathfm.records import read_trial
from pathfm.records.run_folder import INJECTED_FAILURES_FILE, TRIAL_FILE
from pathfm.sweeps.collect import collect


def _store(kind: str, tmp_path: Path) -> object_store.RemoteStorage:
    if kind == "memory":
        return object_store.open_storage(f"memory://bucket-{tmp_path.name}/sweeps")
    (tmp_path / "bucket").mkdir(exist_ok=True)
    return object_store.open_storage(f"file://{tmp_path}/bucket/sweeps")


def _checkpoint(folder: Path, step: int) -> None:
    ck = folder / "checkpoints" / f"step_{step:08d}.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    ck.write_bytes(os.urandom(1000 + step))
    ck.with_name(ck.name + ".sha256").write_text(f"{step:064d}  {ck.name}\n")


def _trial_folder(folder: Path, attempt_started_at: float = 1.0) -> Path:
    _checkpoint(folder, 2)
    (folder / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (folder / INJECTED_FAILURES_FILE).write_text("1")
    (folder / ".metrics.jsonl.x1y2.tmp").write_text("half written")  # pathfm's atomic-write temporary: never synced
    atomic_write_json(folder / TRIAL_FILE, {"status": "RUNNING", "attempt_started_at": attempt_started_at})
    return folder


def _bytes(folder: Path) -> dict[str, bytes]:
    return {rel: (folder / rel).read_bytes() for rel in local_files(folder)}


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_trial_folder_is_pushed_incrementally_and_pulled_back(tmp_path, kind):
    store = _store(kind, tmp_path).child("sw").child("trial_a")
    node_a = _trial_folder(tmp_path / "a" / "trial_a")
    mirror = FolderMirror(node_a, store)
    first = mirror.push()
    assert first[-1] == TRIAL_FILE and sorted(first) == sorted(local_files(node_a))
    assert ".metrics.jsonl.x1y2.tmp" not in first and INJECTED_FAILURES_FILE in first
    assert first.index("checkpoints/step_00000002.pt") < first.index("checkpoints/step_00000002.pt.sha256")
    assert stored_files(store) == {rel: size for rel, (size, _) in local_files(node_a).items()}
    assert mirror.push() == []  # nothing changed: nothing copied
    _checkpoint(node_a, 4)
    assert mirror.push() == ["checkpoints/step_00000004.pt", "checkpoints/step_00000004.pt.sha256"]
    for p in (node_a / "checkpoints").glob("step_00000002*"):  # pruned by run.keep_checkpoints
        p.unlink()
    atomic_write_json(node_a / TRIAL_FILE, {"status": "TERMINATED", "attempt_started_at": 1.0})
    assert mirror.push() == [TRIAL_FILE]
    assert not any("step_00000002" in rel for rel in stored_files(store))  # the prune reached the store
    if kind == "file":  # uploads went through a temporary name and a rename: none is left
        assert not [n for _, _, names in os.walk(tmp_path / "bucket") for n in names if n.endswith(".part")]
    node_b = tmp_path / "b" / "trial_a"  # another node: nothing staged there
    pulled = FolderMirror(node_b, store).pull()
    assert pulled[-1] == TRIAL_FILE and _bytes(node_b) == _bytes(node_a)
    assert FolderMirror(node_b, store).push() == []  # what was pulled is known to be in the store


def test_atomic_uploads_rename_only_where_a_rename_is_atomic(tmp_path):
    local = pafs.LocalFileSystem()
    assert renames_atomically(local) and renames_atomically(pafs.SubTreeFileSystem(str(tmp_path), local))
    assert not renames_atomically(object_store.open_storage(f"memory://x-{tmp_path.name}").filesystem)  # visible when closed


def test_a_trial_is_pulled_only_when_the_store_holds_a_later_attempt(tmp_path):
    store = _store("memory", tmp_path).child("sw").child("trial_a")
    node_a = _trial_folder(tmp_path / "a" / "trial_a", attempt_started_at=1.0)
    FolderMirror(node_a, store).push()
    assert FolderMirror(node_a, store).restore() == []  # A holds what the store holds
    node_b = _trial_folder(tmp_path / "b" / "trial_a", attempt_started_at=1.0)
    shutil.rmtree(node_b)
    FolderMirror(node_b, store).restore()  # restarted on B: B has nothing, the store has it
    assert _bytes(node_b) == _bytes(node_a)
    _checkpoint(node_b, 4)  # B's attempt goes on, then the trial comes back to A
    atomic_write_json(node_b / TRIAL_FILE, {"status": "RUNNING", "attempt_started_at": 2.0})
    FolderMirror(node_b, store).push()
    fetched = FolderMirror(node_a, store).restore()
    assert {"checkpoints/step_00000004.pt", "checkpoints/step_00000004.pt.sha256", TRIAL_FILE} <= set(fetched)
    assert not any("step_00000002" in rel for rel in fetched)  # checkpoints are written once: not fetched again
    assert read_trial(node_a)["attempt_started_at"] == 2.0


def test_the_driver_gathers_other_nodes_trials_and_uploads_the_sweep_files(tmp_path):
    store = _store("file", tmp_path).child("sw")
    driver = tmp_path / "driver" / "sw"
    atomic_write_json(driver / "sweep_meta.json", {"sweep": "sw", "params": [], "n_trials": 2})
    for i, node in enumerate(("driver", "other")):
        t = _trial_folder(tmp_path / node / "sw" / f"trial_{i:04d}")
        (t / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
        atomic_write_json(t / TRIAL_FILE, {"trial_id": f"t{i}", "index": i, "status": "TERMINATED", "params": {},
                                           "attempt_started_at": 1.0})
        FolderMirror(t, store.child(t.name)).push()
    assert gather_trials(driver, store) == ["trial_0001"]  # the other node's trial, without its checkpoints
    assert not (driver / "trial_0001" / "checkpoints").exists() and (driver / "trial_0001" / TRIAL_FILE).is_file()
    assert gather_trials(driver, store) == []  # nothing new in the store
    collect(driver)
    assert sorted(mirror_sweep(driver, store)) == ["results.parquet", "sweep_meta.json"]  # the trials pushed theirs
    in_store = stored_files(store)
    assert {"sweep_meta.json", "results.parquet", "trial_0001/checkpoints/step_00000002.pt"} <= set(in_store)
    assert mirror_sweep(driver, store) == [] and stored_files(store) == in_store
    # the gathered trial is later restored onto the driver's node (`sweep resume`): its checkpoints come too
    restored = FolderMirror(driver / "trial_0001", store.child("trial_0001")).restore()
    assert restored == ["checkpoints/step_00000002.pt", "checkpoints/step_00000002.pt.sha256"]


def test_the_sweep_state_reaches_the_store_while_the_sweep_runs_and_a_new_machine_stages_it(tmp_path, monkeypatch):
    store = _store("file", tmp_path).child("sw")
    driver = tmp_path / "driver" / "sw"
    object_store.record_mirror(driver, store)
    atomic_write_json(driver / "sweep_meta.json", {"sweep": "sw"})
    (driver / "experiment_state-1.json").write_text('{"v": 1}')
    t = _trial_folder(driver / "trial_0000")
    FolderMirror(t, store.child(t.name)).push()  # a trial pushes its own folder
    state = SweepFilesMirror(driver, store, period_s=5.0)
    assert sorted(state.maybe_push(now=100.0)) == ["experiment_state-1.json", "mirror_uri.txt", "staged_at.txt",
                                                   "sweep_meta.json"]  # never a trial folder: each syncs itself
    (driver / "experiment_state-1.json").write_text('{"v": 22}')  # Tune's next snapshot
    assert state.maybe_push(now=103.0) == []  # checked at most every period_s
    assert state.maybe_push(now=105.0) == ["experiment_state-1.json"]
    assert state.push_now(now=105.5) == []  # nothing changed: nothing uploaded
    (driver / "experiment_state-1.json").write_text('{"v": 22, "resumed": 1}')
    assert state.maybe_push(now=7.0) == ["experiment_state-1.json"]  # a resumed driver's clock starts anew

    # the driver's machine is lost: `sweep resume URI` elsewhere stages the store's copy where the driver ran it
    shutil.rmtree(tmp_path / "driver")
    monkeypatch.setenv(object_store.STAGING_ENV, str(tmp_path / "elsewhere"))
    staged = stage_from_store(store.uri)
    assert staged == driver and not (tmp_path / "elsewhere").exists()
    assert (staged / "experiment_state-1.json").read_text() == '{"v": 22, "resumed": 1}'
    assert read_trial(staged / "trial_0000")["status"] == "RUNNING"
    assert not (staged / "trial_0000" / "checkpoints").exists()  # fetched by the trial when it resumes
    # on the driver's own machine the staging folder is kept as it is (at least as new as the store)
    (driver / "experiment_state-1.json").write_text('{"v": 333}')
    assert stage_from_store(store.uri) == driver and (driver / "experiment_state-1.json").read_text() == '{"v": 333}'
    with pytest.raises(PathfmError, match="no sweep there"):
        stage_from_store(store.child("trial_0000").uri)
    # a trial the restored Ray experiment does not know is set aside in the store too, checkpoints and all,
    # so it is not gathered back as a trial
    in_store = stored_files(store.child("trial_0000"))
    set_aside_in_store(store, "trial_0000", "lost_trials/trial_0000")
    assert stored_files(store.child("lost_trials/trial_0000")) == in_store
    assert not stored_files(store.child("trial_0000")) and gather_trials(tmp_path / "fresh", store) == []


def _fast_spec():
    from pathfm.sweeps.spec import spec_from_dict

    return spec_from_dict({
        "name": "moved", "space": {"kde_weight": {"grid": [0.0]}}, "eval": {"enabled": False},
        "objective": {"metric": "loss", "mode": "min"}, "report_every": 1,
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 5, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                      "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256},
    })


def test_a_trial_restarted_on_a_node_without_its_folder_resumes_from_the_store(tmp_path, monkeypatch):
    # two 5-step CPU trainings through run_trial (no Ray): ~6 s
    from pathfm.sweeps.spec import expand_trials
    from pathfm.sweeps.trainable import run_trial

    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"when": {"kde_weight": 0.0}, "at_step": 3, "times": 1}]))
    for name, value in fault_environment(rules).items():
        monkeypatch.setenv(name, value)
    spec = _fast_spec()
    (trial,) = expand_trials(spec)
    store = _store("memory", tmp_path).child("moved")
    run_dir = tmp_path / "staging" / "moved" / "trial_0"
    with pytest.raises(RuntimeError, match="injected failure at step 3"):
        with synced_trial(run_dir, store) as callbacks:
            run_trial(spec, trial, run_dir, trial_id="t0", sweep="moved", callbacks=callbacks)
    pushed = stored_files(store.child("trial_0"))
    assert "checkpoints/step_00000002.pt" in pushed and INJECTED_FAILURES_FILE in pushed
    shutil.rmtree(tmp_path / "staging")  # Ray restarts the trial on another node: no staging folder there
    with synced_trial(run_dir, store) as callbacks:
        run_trial(spec, trial, run_dir, trial_id="t0", sweep="moved", callbacks=callbacks)
    info = read_trial(run_dir)
    assert (info["status"], info["attempts"], info["restored_from_step"]) == ("TERMINATED", 2, 2)
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    in_store = json.loads(object_store.open_storage(f"memory://bucket-{tmp_path.name}/sweeps").filesystem
                          .open_input_stream(f"{store.root}/trial_0/{TRIAL_FILE}").read())
    assert in_store["status"] == "TERMINATED" and in_store["final_step"] == 5


def test_ddp_trials_of_an_object_store_sweep_on_several_nodes_are_warned_about():
    from pathfm.infra.sweep_sync import ddp_store_warning

    assert ddp_store_warning(1, 4) is None  # single-process trials sync from their node
    assert ddp_store_warning(4, 1) is None  # one node: the driver's staging folder holds every trial
    line = ddp_store_warning(2, 3)
    assert "resources.workers=2" in line and "3 nodes" in line and "shared --storage folder" in line
