"""End to end: evaluate() and `pathfm eval` on a pico ViT run dir over both bundled tasks; fast_probe."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pathfm.cli import main
from pathfm.config import load_config
from pathfm.eval import evaluate, fast_probe, headline_metrics
from pathfm.results import EVAL_SCHEMA as SCHEMA


@pytest.fixture(scope="module")
def pico_run(make_pico_run):
    return make_pico_run("pico_eval_run", step=30)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluate_both_tasks_with_baselines(pico_run, capsys):
    df = evaluate(pico_run, tasks=["crc", "osteo"], probes=["linear", "knn"], resize=112, progress=False)
    assert df.columns == list(SCHEMA)
    assert set(df["backbone"]) == {"trained", "random_init", "color_histogram"}
    assert set(df["metric"]) == {"balanced_accuracy", "accuracy", "macro_f1"}
    assert set(df["step"]) == {30}
    # 5 crc folds + 4 osteo folds, x 2 probes x 3 backbones x 3 metrics
    assert df.height == (5 + 4) * 2 * 3 * 3
    assert df["value"].is_between(0, 1).all()
    crc = df.filter(pl.col("task") == "crc@112px")
    assert (crc["n_train"] + crc["n_test"] == 108).all()
    out = capsys.readouterr().out
    assert "bal.acc (random_init)" in out and "bal.acc (color_histogram)" in out and "RankMe" in out
    stored = pl.read_parquet(pico_run / "eval.parquet")
    assert stored.height == df.height
    # re-running replaces the same rows instead of double-counting them (features come from the cache)
    assert list((pico_run / "eval_cache").glob("*.npy"))
    evaluate(pico_run, tasks=["osteo"], probes=["knn"], resize=112, progress=False, verbose=False)
    assert pl.read_parquet(pico_run / "eval.parquet").height == df.height
    assert set(df["task"]) == {"crc@112px", "osteo@112px"}  # options are part of the task label
    head = headline_metrics(df)
    linear = [head["eval/crc@112px/linear/balanced_accuracy"], head["eval/osteo@112px/linear/balanced_accuracy"]]
    assert head["eval/mean_balanced_accuracy"] == pytest.approx(sum(linear) / 2)
    assert "eval/crc@112px/knn/random_init/balanced_accuracy" in head


def test_fast_probe_keys_and_state(pico_run):
    from pathfm.backbone.backbone_file import load_backbone

    model, _ = load_backbone(pico_run / "teacher_backbone.pt")
    model.train()
    metrics = fast_probe(model, tasks=["crc"], probe="knn", resize=56)
    assert model.training
    assert set(metrics) == {f"probe/crc/{k}" for k in
                            ("balanced_accuracy", "accuracy", "macro_f1", "rankme", "uniformity")}
    assert 0 <= metrics["probe/crc/balanced_accuracy"] <= 1 and metrics["probe/crc/rankme"] >= 1
    assert fast_probe(model, tasks="crc", probe="knn", resize=56) == metrics  # deterministic


def test_cli_bad_inputs_exit_2_with_a_clear_message(pico_run, tmp_path, capsys):
    assert main(["eval", str(pico_run), "--task", "nope"]) == 2
    assert "unknown task 'nope'. Known tasks: crc, crc9, crc_crops, osteo, pcam" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--task", "crc"]) == 2
    assert "no teacher_backbone.pt" in capsys.readouterr().err
    assert main(["eval", str(pico_run), "--probe", "svm"]) == 2
    assert "unknown probe(s) ['svm']" in capsys.readouterr().err
    assert main(["eval", "--list-tasks"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("crc9", "osteo", "pcam"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_runs_on_a_run_dir(pico_run, tmp_path, capsys):
    out = tmp_path / "elsewhere.parquet"
    rc = main(["eval", str(pico_run), "--task", "osteo", "--probe", "knn,linear", "--no-baselines", "--resize",
               "56", "--out", str(out), "--no-progress"])
    assert rc == 0
    df = pl.read_parquet(out)
    assert set(df["backbone"]) == {"trained"} and set(df["probe"]) == {"knn", "linear"}
    assert "bal.acc (trained)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_training_run_probe_hook_and_checkpoint_evaluation(tmp_path):
    """`pathfm train` (2 smoke steps) logs the fast probe; its checkpoint file is evaluated into the run."""
    from pathfm.eval.features import extract_features
    from pathfm.eval.hook import probe_teacher
    from pathfm.eval.sources import load_source
    from pathfm.eval.tasks import get_task
    from pathfm.eval.tiles import load_samples
    from pathfm.io import read_jsonl
    from pathfm.ssl.trainer import train

    cfg = load_config("smoke", ["optim.steps=2", "data.batch_size=2", "data.crops.n_local=0", "run.progress=false",
                                "run.checkpoint_every=2", "optim.warmup_steps=0", "probe.every=2",
                                "probe.tasks=[osteo]"])
    run = tmp_path / "run"
    train(cfg, run, probe=probe_teacher)
    last = read_jsonl(run / "metrics.jsonl")[-1]
    assert 0 <= last["probe/osteo/balanced_accuracy"] <= 1 and last["probe/osteo/rankme"] >= 1
    (ckpt,) = (run / "checkpoints").glob("step_*.pt")
    bb = load_source(ckpt)
    assert bb.run_dir == run and bb.step == 2 and bb.native_size == 112
    images = load_samples(get_task("osteo")).images[::6]
    trained = extract_features(bb.model, images, resize=112)
    random = extract_features(bb.random_init().model, images, resize=112)
    assert np.abs(trained - random).mean() > 0.1 * np.abs(trained).mean()
    df = evaluate(ckpt, tasks="osteo", probes="knn", resize="model", progress=False, verbose=False)
    assert set(df["step"]) == {2} and set(df["task"]) == {"osteo@112px"}
    assert pl.read_parquet(run / "eval.parquet").height == df.height
