"""Tracking: a real tiny training run and a real 2-trial Ray sweep logged to MLflow (local SQLite store),
W&B (offline mode, read back from its run file) and TensorBoard (read back from the event file)."""

from __future__ import annotations

import glob
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from pathfm.config import load_config
from pathfm.tracking import (
    evaluation_summary,
    flatten_params,
    log_evaluation,
    numeric_metrics,
    read_run_ids,
    recipe_params,
)

TINY = ["optim.steps=3", "data.batch_size=4", "data.crops.n_local=2", "run.progress=false", "optim.warmup_steps=1",
        "optim.teacher_temp_warmup_steps=2", "optim.freeze_last_layer_steps=1", "data.tissue.thumbnail_size=256"]


def test_params_are_every_knob_flattened_and_metrics_the_numbers_of_a_record():
    assert flatten_params({"loss": {"kde_weight": 0.1, "centering": "softmax"}, "mpps": [0.5, 1.0], "x": None}) == {
        "loss.kde_weight": "0.1", "loss.centering": "softmax", "mpps": "[0.5, 1.0]", "x": "null"}
    cfg = load_config("smoke", ["tracking.wandb.mode=offline"])
    params = recipe_params(cfg)
    assert params["loss.kde_weight"] == str(cfg.loss.kde_weight) and params["data.reader"] == "auto"
    assert not any(k.startswith("tracking.") for k in params)
    assert numeric_metrics({"step": 3, "stage": "main", "loss": 1.5, "lr": 0.001, "x": float("nan"), "ok": True}) == {
        "loss": 1.5, "lr": 0.001}


def eval_table(step: int):
    """A table in the evaluation schema (pathfm.results): two folds of two backbones."""
    from pathfm.results import eval_frame as rows_to_frame

    rows = [{"source": "run", "backbone": b, "task": "crc", "probe": "knn", "fold": f, "metric": "balanced_accuracy",
             "value": v, "step": step, "n_train": 40, "n_test": 10}
            for b, vals in (("trained", (0.6, 0.8)), ("random_init", (0.3, 0.5))) for f, v in enumerate(vals)]
    return rows_to_frame(rows)


def test_evaluation_summary_is_the_mean_over_folds():
    assert evaluation_summary(eval_table(3)) == pytest.approx({
        "eval/random_init/crc/knn/balanced_accuracy": 0.4, "eval/trained/crc/knn/balanced_accuracy": 0.7})


def wandb_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def wandb_records(run_dir: Path) -> list:
    """The records of W&B's offline run files (a LevelDB-style log of protobuf ``Record``s, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data, pos, buf = Path(path).read_bytes(), 7, b""  # 7-byte file header ":W&B" + magic + version
        while pos + 7 <= len(data):
            room = 32768 - pos % 32768
            if room < 7:  # block trailer padding
                pos += room
                continue
            _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if n == 0 and kind == 0:
                pos += room
                continue
            buf += data[pos + 7:pos + 7 + n]
            pos += 7 + n
            if kind in (1, 4):  # FULL or LAST chunk
                rec = pb.Record()
                rec.ParseFromString(buf)
                out.append(rec)
                buf = b""
    return out


def tensorboard_scalars(log_dir: Path) -> dict[str, list[int]]:
    """{tag: [steps]} from TensorBoard event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    tags: dict[str, list[int]] = {}
    for path in glob.glob(str(log_dir / "events.out.tfevents.*")):
        data, pos = Path(path).read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    tags.setdefault(v.tag, []).append(ev.step)
    return tags


def test_tensorboard_runs_opened_in_the_same_second_keep_their_own_event_files(tmp_path, monkeypatch):
    """The training run and the evaluation logged after it each open a writer in <run_dir>/tensorboard;
    tensorboardX names its file by the second and the host only and opens it with 'wb', so a second writer
    in the same second truncated the first's file (the training scalars were lost: KeyError 'loss/ibot')."""
    pytest.importorskip("tensorboardX")
    from tensorboardX import event_file_writer

    from pathfm.config import TensorboardTrackingConfig
    from pathfm.tracking import TensorboardRun

    monkeypatch.setattr(event_file_writer, "time", SimpleNamespace(time=lambda: 1796571343.25))  # one second
    for tag in ("loss/ibot", "eval/trained/crc/knn/balanced_accuracy"):
        run = TensorboardRun(TensorboardTrackingConfig(), tmp_path)
        run.log_metrics({tag: 0.5}, 3)
        run.finish("finished")
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars == {"loss/ibot": [3], "eval/trained/crc/knn/balanced_accuracy": [3]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_training_run_is_logged_to_mlflow_wandb_and_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    from pathfm.cli import main
    from pathfm.io import read_jsonl

    monkeypatch.setenv("WANDB_SILENT", "true")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "run"
    assert main(["train", "smoke", *TINY, f"tracking.mlflow.tracking_uri={db}", "tracking.mlflow.experiment=smoke-test",
                 "tracking.wandb.mode=offline", "tracking.tensorboard={}", "--run-dir", str(run_dir)]) == 0
    records = read_jsonl(run_dir / "metrics.jsonl")
    cfg = load_config(run_dir / "config.yaml")
    ids = read_run_ids(run_dir)
    log_evaluation(cfg, run_dir, eval_table(3))  # as `pathfm eval RUN_DIR` does after evaluating

    client = MlflowClient(tracking_uri=db)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == recipe_params(cfg)  # every knob, nothing else
    for key in ("loss", "loss/dino_global", "loss/kde", "lr", "wd", "momentum", "teacher_temp", "diag/dino_ln_k"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [r["step"] for r in records] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx([r[key] for r in records])
    assert run.data.metrics["eval/trained/crc/knn/balanced_accuracy"] == pytest.approx(0.7)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "metrics.jsonl", "teacher_backbone.pt",
                                                                        "eval_table.json"}

    recs = wandb_records(run_dir)
    config = {wandb_key(i): i.value_json for r in recs if r.HasField("run") for i in r.run.config.update}
    config.update({wandb_key(i): i.value_json for r in recs if r.HasField("config") for i in r.config.update})
    assert config["loss.kde_weight"] == f'"{cfg.loss.kde_weight}"'
    history = [{wandb_key(i): i.value_json for i in r.history.item} for r in recs if r.HasField("history")]
    losses = [h for h in history if "loss/kde" in h]
    assert [int(h["_step"]) for h in losses] == [1, 2, 3]
    assert [float(h["loss"]) for h in losses] == pytest.approx([r["loss"] for r in records])
    assert any("eval/trained/crc/knn/balanced_accuracy" in h for h in history)
    artifacts = {(r.artifact.type, m.path) for r in recs if r.HasField("artifact") for m in r.artifact.manifest.contents}
    assert {("model", "teacher_backbone.pt"), ("run-file", "config.yaml"), ("run-file", "metrics.jsonl")} <= artifacts

    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert scalars["loss/ibot"] == [1, 2, 3] and scalars["eval/trained/crc/knn/balanced_accuracy"] == [3]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_trial_sweep_logs_one_tracked_run_per_trial(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from pathfm.records import SweepFolder, read_trial
    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    monkeypatch.setenv("WANDB_SILENT", "true")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    spec = spec_from_dict({
        "name": "tracked",
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 2, "optim.warmup_steps": 1, "data.batch_size": 4,
                      "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256},
        "space": {"kde_weight": {"grid": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
        "tracking": {"mlflow": {"tracking_uri": db, "experiment": "sweeps"}, "wandb": {"mode": "offline"}},
    })
    sweep_dir = run_sweep(spec, storage=tmp_path / "sweeps", verbose=0)
    dirs = SweepFolder(sweep_dir).trial_dirs()
    assert [read_trial(d)["status"] for d in dirs] == ["TERMINATED", "TERMINATED"]

    client = MlflowClient(tracking_uri=db)
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["loss.kde_weight"] for r in runs) == ["0.0", "0.05"]
    assert {r.data.tags["sweep"] for r in runs} == {"tracked"} and {r.data.tags["group"] for r in runs} == {"tracked"}
    assert {r.info.run_id for r in runs} == {read_run_ids(d)["mlflow"] for d in dirs}
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == [1, 2]
        assert "teacher_backbone.pt" in {a.path for a in client.list_artifacts(r.info.run_id)}
    for d in dirs:  # each trial's W&B run, grouped by the sweep
        recs = wandb_records(d)
        assert [r.run.run_group for r in recs if r.HasField("run")][0] == "tracked"
        assert [int(i.value_json) for r in recs if r.HasField("history") for i in r.history.item if wandb_key(i) == "_step"] == [1, 2]


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "file:mlruns", "./mlruns", "/tmp/mlruns"])
def test_mlflow_file_store_is_refused_before_step_1(uri, tmp_path, monkeypatch, capsys):
    """MLflow 3 keeps its file store read-only: logging failed at the first step, mid-training, with no
    checkpoint and no DONE. The config (and MLFLOW_TRACKING_URI) are refused at start-up with the fix."""
    from pathfm.cli import main
    from pathfm.errors import ConfigError
    from pathfm.tracking import TrackingCallback

    with pytest.raises(ConfigError, match=r"file store.*read-only.*sqlite:///path/mlflow.db"):
        load_config("smoke", [f"tracking.mlflow.tracking_uri={uri}"])
    out = tmp_path / "runs"
    assert main(["train", "smoke", f"tracking.mlflow.tracking_uri={uri}", f"run.output_dir={out}"]) == 2
    assert "sqlite:///path/mlflow.db" in capsys.readouterr().err and not out.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_config("smoke", ["tracking.mlflow.experiment=x"])
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI=.*file store.*sqlite:///path/mlflow.db"):
        TrackingCallback(cfg, tmp_path / "run")
    assert load_config("smoke", [f"tracking.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]).tracking.mlflow
