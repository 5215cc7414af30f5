"""End-to-end sweeps on a real local Ray (2 CPUs) with the real trainer and evaluation, no mocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from fault_injection import fault_environment

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial
from pathfm.sweeps.runner import SweepError, run_sweep
from pathfm.sweeps.spec import spec_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAST = {  # the smoke preset, shortened for tests
    "data.assume_mpp": 0.5, "optim.steps": 6, "optim.warmup_steps": 1, "run.checkpoint_every": 3,
    "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256,
}


@pytest.fixture(scope="module")
def fault_file(tmp_path_factory):
    """The test-fault rules file (tests/fault_injection.py): named in the environment before Ray starts, with
    the trial-callback hook and PYTHONPATH that load it, so the trial workers inherit them; a test writes rules
    into it and removes it afterwards."""
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    env = fault_environment(path)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def local_ray(fault_file):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    yield
    ray.shutdown()


def _spec(name: str, **kw):
    base = {"name": name, "overrides": dict(FAST), "eval": {"enabled": False}, "objective": {"metric": "loss",
                                                                                          "mode": "min"},
            "report_every": 1, "max_concurrent_trials": 2}
    base.update(kw)
    return spec_from_dict(base)


def _trials(sweep_dir: Path) -> list[dict]:
    return [read_trial(d) | {"dir": d} for d in SweepFolder(sweep_dir).trial_dirs()]


def test_grid_sweep_of_smoke_preset_writes_results(local_ray, tmp_path: Path):
    spec = _spec("grid4", space={"kde_weight": {"grid": [0.0, 0.05]}, "hed_strength": {"grid": [0.0, 0.05]}},
                 objective={"metric": "eval/mean_balanced_accuracy", "mode": "max"},
                 eval={"tasks": ["crc"], "probes": ["linear"], "n_folds": 2}, report_every=3)
    sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    df = pl.read_parquet(sweep_dir / "results.parquet")
    # the baselines, evaluated once for the sweep (not per trial): trial_id "reference", arm and params null, seed:
    # random init's init seed
    ref = df.filter(pl.col("trial_id") == "reference")
    assert set(ref["backbone"]) == {"random_init", "color_histogram"} and ref["param.kde_weight"].is_null().all()
    ri = ref.filter(pl.col("backbone") == "random_init")
    assert sorted(ri["seed"].unique().to_list()) == [1234, 1235, 1236, 1237, 1238]  # eval.random_init_seeds: 5
    assert ri.filter(pl.col("seed") == 1234)["fold"].sort().to_list() == [0, 0, 0, 1, 1, 1]  # 3 metrics x 2 folds
    assert json.loads((sweep_dir / "reference" / "reference.json").read_text())["status"] == "DONE"
    df = df.filter(pl.col("trial_id") != "reference")
    assert df.filter(pl.col("backbone").is_in(["random_init", "color_histogram"])).height == 0
    assert df["trial_id"].n_unique() == 4
    assert set(df["status"].unique()) == {"TERMINATED"}
    params = df.select("param.kde_weight", "param.hed_strength").unique().sort(pl.all())
    assert params.rows() == [(0.0, 0.0), (0.0, 0.05), (0.05, 0.0), (0.05, 0.05)]
    final = df.filter(pl.col("metric") == "eval/mean_balanced_accuracy")
    assert final.height == 4 and final["final"].all() and final["value"].is_between(0, 1).all()
    assert df.filter((pl.col("kind") == "eval") & (pl.col("task") == "crc") & (pl.col("probe") == "linear")).height > 0
    last = df.filter((pl.col("kind") == "train") & pl.col("final") & (pl.col("metric") == "loss"))
    assert last["step"].to_list() == [6] * 4 and (last["tiles_seen"] == 6 * 4).all()
    meta = json.loads((sweep_dir / "sweep_meta.json").read_text())
    assert meta["params"] == ["kde_weight", "hed_strength"] and meta["n_trials"] == 4
    for t in _trials(sweep_dir):  # the trial folder layout of docs/architecture.md
        for f in ("config.yaml", "metrics.jsonl", "eval.parquet", "checkpoints", "teacher_backbone.pt"):
            assert (t["dir"] / f).exists(), f
    with pytest.raises(SweepError, match="resume"):  # the same name again: told to resume instead
        run_sweep(spec, storage=tmp_path, verbose=0)


def test_tune_result_dataframe_shows_the_knobs_arm_and_seed_of_a_grid_sweep(local_ray, tmp_path: Path):
    """Tune gets the real parameter space (not trial indices): its ResultGrid has one config/<knob> column
    per knob plus config/arm and config/seed, and Tune ran the trials in the order expand_trials gives."""
    from ray import tune

    from pathfm.sweeps.tune_entry import sweep_trainable

    spec = _spec("knobs", space={"kde_weight": {"grid": [0.05]}, "hed_strength": 0.0}, seeds=[7],
                 arms=[{"name": "base", "labels": {"koleo": False}},
                       {"name": "+koleo", "overrides": {"koleo_weight": 0.1}, "labels": {"koleo": True}}],
                 overrides=dict(FAST, **{"optim.steps": 2}))
    sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    df = tune.Tuner.restore(str(sweep_dir), trainable=sweep_trainable).get_results().get_dataframe()
    assert {"config/kde_weight", "config/hed_strength", "config/arm", "config/seed"} <= set(df.columns)
    assert "config/index" not in df.columns
    got = sorted(zip(df["trial_id"], df["config/arm"], df["config/seed"], df["config/kde_weight"],
                     df["config/hed_strength"]))
    assert [row[1:] for row in got] == [("base", 7, 0.05, 0.0), ("+koleo", 7, 0.05, 0.0)]
    infos = {t["trial_id"]: t for t in _trials(sweep_dir)}
    assert [(infos[row[0]]["index"], infos[row[0]]["arm"]) for row in got] == [(0, "base"), (1, "+koleo")]
    assert [infos[row[0]]["overrides"].get("loss.koleo_weight") for row in got] == [None, 0.1]
    assert [infos[row[0]]["arm_labels"] for row in got] == [{"koleo": False}, {"koleo": True}]  # recorded at launch
    res = pl.read_parquet(sweep_dir / "results.parquet")
    assert res.group_by("arm").agg(pl.col("param.koleo").first()).sort("arm").rows() == [("+koleo", True), ("base", False)]


def test_failed_trial_is_recorded_and_restarted_trial_continues_from_its_step(local_ray, fault_file, tmp_path: Path):
    spec = _spec("faults", space={"kde_weight": {"grid": [0.0, 0.01, 0.02]}}, max_failures=1)
    fault_file.write_text(json.dumps([{"when": {"kde_weight": 0.01}, "at_step": 2},              # always fails
                                      {"when": {"kde_weight": 0.02}, "at_step": 5, "times": 1}]))  # fails once
    try:
        sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    finally:
        fault_file.unlink()
    by_kde = {t["params"]["kde_weight"]: t for t in _trials(sweep_dir)}
    assert by_kde[0.0]["status"] == "TERMINATED" and by_kde[0.0]["attempts"] == 1
    err = by_kde[0.01]
    assert err["status"] == "ERROR" and "injected failure at step 2" in err["error"]
    assert "Traceback" in err["traceback"]
    restarted = by_kde[0.02]
    assert restarted["status"] == "TERMINATED" and restarted["attempts"] == 2
    assert restarted["restored_from_step"] == 3  # the checkpoint before the failure at step 5, not 0
    steps = [r["step"] for r in read_jsonl(restarted["dir"] / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-3 were not trained twice
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df.filter(pl.col("status") == "ERROR")["param.kde_weight"].unique().to_list() == [0.01]


def test_optuna_with_asha_stops_some_trials_early(local_ray, tmp_path: Path):
    spec = _spec("asha", space={"kde_weight": {"loguniform": [1e-3, 1.0]}},
                 search={"algorithm": "optuna", "num_samples": 4, "seed": 1},
                 scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
                 overrides=dict(FAST, **{"optim.steps": 8}))
    sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    trials = _trials(sweep_dir)
    assert len(trials) == 4
    statuses = [t["status"] for t in trials]
    assert "STOPPED" in statuses and "TERMINATED" in statuses, statuses
    for t in trials:
        recs = read_jsonl(t["dir"] / "metrics.jsonl")
        if t["status"] == "STOPPED":
            assert recs[-1]["step"] < 8
        else:
            assert recs[-1]["step"] == 8
    assert all(t["wall_time_s"] > 0 and t["final_step"] >= 1 for t in trials)
    assert len({t["params"]["kde_weight"] for t in trials}) == 4  # TPE proposed distinct points
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df.filter(pl.col("status") == "STOPPED")["trial_id"].n_unique() == statuses.count("STOPPED")


def test_guard_stops_collapsed_trials_under_tune_with_the_reason_in_the_results(local_ray, tmp_path: Path):
    # the smoke preset's LayerScale 1e-5 gives exactly uniform targets: run.guards stops both trials at step 2
    spec = _spec("guarded", space={"kde_weight": {"loguniform": [1e-3, 0.1]}},
                 search={"algorithm": "optuna", "num_samples": 2, "seed": 0},
                 overrides=dict(FAST, **{"optim.steps": 8, "run.guards": {"patience": 2}}))
    sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    trials = _trials(sweep_dir)
    assert [(t["status"], t["stop_reason"], t["final_step"]) for t in trials] == [("STOPPED", "collapsed", 2)] * 2
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df.group_by("trial_id").agg(pl.col("stop_reason").first())["stop_reason"].to_list() == ["collapsed"] * 2


def test_gpu_request_on_cpu_cluster_fails_early(local_ray, tmp_path: Path):
    spec = _spec("gpu", resources={"gpu": 1})
    with pytest.raises(SweepError, match="no GPU"):
        run_sweep(spec, storage=tmp_path, verbose=0)
    assert not (tmp_path / "gpu" / "tuner.pkl").exists()


def test_ddp_trial_with_two_ray_train_workers_runs_to_completion(local_ray, tmp_path: Path):
    """`resources.workers: 2`: the trial runs as a Ray Train TorchTrainer with 2 gloo workers (CPU)."""
    spec = _spec("ddp2", resources={"cpu": 0.5, "workers": 2}, report_every=2,
                 overrides=dict(FAST, **{"optim.steps": 4, "run.checkpoint_every": 2}))
    sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    (t,) = _trials(sweep_dir)
    assert t["status"] == "TERMINATED" and t["final_step"] == 4, t.get("error")
    recs = read_jsonl(t["dir"] / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]  # rank 0 logs each step once
    assert recs[-1]["tiles_seen"] == 4 * 4 * 2  # steps x batch x 2 ranks: one process group of 2
    assert (t["dir"] / "ray_train").is_dir() and (t["dir"] / "teacher_backbone.pt").exists()
    df = pl.read_parquet(sweep_dir / "results.parquet")
    final = df.filter((pl.col("metric") == "loss") & pl.col("final"))
    assert sorted(final["kind"].to_list()) == ["eval", "train"] and final["step"].to_list() == [4, 4]  # + objective
