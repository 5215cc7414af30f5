"""Sweep storage on object stores through real filesystems (no mocks): fsspec's in-memory filesystem
(``memory://``, the code path of ``s3://``/``gs://`` URIs that fsspec serves) and a pyarrow
``SubTreeFileSystem`` over a local folder (pyarrow's path, as for ``s3://``/``gs://`` URIs); a real 2-trial
Ray sweep mirrored to ``memory://`` and collected back from it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pytest

from pathfm.errors import PathfmError
from pathfm.infra import object_store
from pathfm.infra.sweep_sync import mirror_sweep
from pathfm.io import atomic_write_json
from pathfm.records.run_folder import SYNC_MANIFEST_FILE, TRIAL_FILE
from pathfm.records.sweep_folder import MIRROR_FILE, RESULTS_FILE
from pathfm.results import eval_frame
from pathfm.sweeps.collect import collect, collect_from_store


def _sweep_folder(root: Path, name: str = "s3sweep") -> Path:
    """A finished sweep's files as the runner and trainable write them: meta, two trials, eval rows."""
    d = root / name
    atomic_write_json(d / "sweep_meta.json", {"sweep": name, "params": ["kde_weight"], "n_trials": 2})
    for i, kde in enumerate((0.0, 0.05)):
        t = d / f"trial_{i:04d}"
        atomic_write_json(t / TRIAL_FILE, {"trial_id": f"t{i}", "index": i, "status": "TERMINATED", "seed": 0,
                                           "params": {"kde_weight": kde}, "objective": {"loss": 1.0 + i}})
        (t / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 10 - i, "time_s": s})
                                                 + "\n" for s in (1, 2)))
        eval_frame([{"source": str(t), "backbone": "trained", "task": "crc", "probe": "linear", "fold": 0,
                     "metric": "balanced_accuracy", "value": 0.5 + i / 10, "step": 2, "n_train": 8,
                     "n_test": 2}]).write_parquet(t / "eval.parquet")
    return d


def _read(fs, path: str) -> pl.DataFrame:
    with fs.open_input_file(path) as f:
        return pl.read_parquet(f.read())


@pytest.mark.parametrize("store", ["memory", "subtree"])
def test_a_sweep_mirrored_to_a_store_is_collected_back_through_its_filesystem(tmp_path, monkeypatch, store):
    monkeypatch.setenv(object_store.STAGING_ENV, str(tmp_path / "staging"))
    local = _sweep_folder(tmp_path / "local")
    expected = pl.read_parquet(collect(local))
    (local / RESULTS_FILE).unlink()
    if store == "memory":
        uri, fs_obj = f"memory://bucket-{tmp_path.name}/sweeps", None
    else:
        (tmp_path / "bucket").mkdir()
        uri, fs_obj = "sweeps", pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    target = object_store.open_storage(uri, fs_obj).child("s3sweep")
    mirror_sweep(local, target)
    info = target.filesystem.get_file_info(f"{target.root}/trial_0001/{TRIAL_FILE}")
    assert info.type == pafs.FileType.File
    if store == "subtree":  # the bytes really are under the subtree's base folder
        assert (tmp_path / "bucket" / "sweeps" / "s3sweep" / "trial_0001" / "eval.parquet").is_file()
    out_uri = collect_from_store(target.uri, fs_obj)
    assert out_uri == f"{target.uri}/{RESULTS_FILE}"
    got = _read(target.filesystem, f"{target.root}/{RESULTS_FILE}")  # written back into the store
    assert got.equals(expected) and got.height == expected.height > 0
    assert sorted(got.filter(pl.col("metric") == "balanced_accuracy")["value"].to_list()) == [0.5, 0.6]


def test_storage_uris_fail_clearly(tmp_path):
    with pytest.raises(PathfmError, match=r"absolute path \(file:///abs/path"):
        object_store.local_root("file://runs/sweeps")
    assert object_store.local_root(f"file://{tmp_path}") == tmp_path
    try:
        import adlfs  # noqa: F401
    except ImportError:  # the backend is not installed here: the message names it and the extra
        with pytest.raises(PathfmError, match=r"needs adlfs .*pip install 'pathfm\[remote\]' adlfs"):
            object_store.open_storage("az://container/sweeps")
    with pytest.raises(PathfmError, match="no filesystem for the scheme 'nosuchfs'"):
        object_store.open_storage("nosuchfs://x/y")
    with pytest.raises(PathfmError, match="no sweep folder there"):
        collect_from_store(f"memory://empty-{tmp_path.name}/nothing")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_ray_sweep_on_a_memory_uri_is_mirrored_and_collected(tmp_path, monkeypatch):
    import ray

    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    monkeypatch.setenv(object_store.STAGING_ENV, str(tmp_path / "staging"))
    spec = spec_from_dict({
        "name": "mem2", "space": {"kde_weight": {"grid": [0.0, 0.05]}}, "eval": {"enabled": False},
        "objective": {"metric": "loss", "mode": "min"}, "report_every": 1, "max_concurrent_trials": 2,
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 3, "optim.warmup_steps": 1, "data.batch_size": 4,
                      "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256},
    })
    uri = f"memory://sweeps-{tmp_path.name}"
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        staged = run_sweep(spec, storage=uri, verbose=0)
    finally:
        ray.shutdown()
    assert staged == tmp_path / "staging" / "memory" / f"sweeps-{tmp_path.name}" / "mem2"
    fs = object_store.open_storage(uri).filesystem
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(f"sweeps-{tmp_path.name}/mem2"))}
    assert {"sweep_meta.json", RESULTS_FILE} <= names and sum(n.startswith("trial_") for n in names) == 2
    in_store = _read(fs, f"sweeps-{tmp_path.name}/mem2/{RESULTS_FILE}")
    assert in_store.equals(pl.read_parquet(staged / RESULTS_FILE))
    assert (staged / MIRROR_FILE).read_text().strip() == f"{uri}/mem2"  # `sweep resume` mirrors there again
    from pathfm.infra.folder_mirror import local_files, stored_files

    for trial_dir in sorted(staged.glob("trial_*")):
        # memory:// lives in one process: the trials' own pushes (from Ray workers) went to theirs, so the
        # driver's end-of-sweep upload found these files missing in its store and copied them
        trial_files = stored_files(object_store.open_storage(f"{uri}/mem2/{trial_dir.name}"))
        assert trial_files == {rel: size for rel, (size, _) in local_files(trial_dir).items()}
        assert any(r.startswith("checkpoints/step_") and r.endswith(".pt") for r in trial_files)
        assert SYNC_MANIFEST_FILE not in trial_files and (trial_dir / SYNC_MANIFEST_FILE).is_file()
        # no Ray checkpoints: Ray would refuse one from a node without its storage_path (the staging folder)
        assert not list(trial_dir.glob("checkpoint_*"))
    import shutil

    shutil.rmtree(tmp_path / "staging")  # collection reads the trial folders from the store, not the staging copy
    collect_from_store(f"{uri}/mem2")
    again = _read(fs, f"sweeps-{tmp_path.name}/mem2/{RESULTS_FILE}")
    assert len(list(staged.glob("trial_*/metrics.jsonl"))) == 2 and not list(staged.glob("trial_*/checkpoints"))
    assert again.equals(in_store)
    assert again.filter(pl.col("trial_id") != "reference")["trial_id"].n_unique() == 2
