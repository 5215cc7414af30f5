"""Sweep spec validation and expansion, results collection from trial folders (fast, no Ray)."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest
import yaml

from pathfm.config import REPO_ROOT
from pathfm.errors import ConfigError
from pathfm.io import append_jsonl, atomic_write_json
from pathfm.sweeps.collect import collect, results_frame
from pathfm.sweeps.runner import format_status
from pathfm.sweeps.spec import Distribution, SweepSpec, expand_trials, load_spec, spec_from_dict

BASE = {"name": "t", "overrides": {"data.assume_mpp": 0.5}}


def spec(**kw) -> SweepSpec:
    return spec_from_dict({**BASE, **kw})


def test_examples_load_and_expand():
    for path in sorted((REPO_ROOT / "sweeps" / "examples").glob("*.yaml")):
        s = load_spec(path)
        trials = expand_trials(s)
        assert trials, path
    s = load_spec(REPO_ROOT / "sweeps/examples/kde_smoke.yaml")
    trials = expand_trials(s)
    assert len(trials) == 4
    assert {(t["params"]["kde_weight"], t["params"]["hed_strength"]) for t in trials} == {
        (0.0, 0.0), (0.0, 0.05), (0.05, 0.0), (0.05, 0.05)}
    assert trials[0]["overrides"]["loss.kde_weight"] == trials[0]["params"]["kde_weight"]


def test_distribution_yaml_forms_round_trip():
    for raw in ({"grid": [0, 0.1]}, {"choice": ["a", "b"]}, {"uniform": [0.0, 1.0]}, {"loguniform": [1e-4, 1e-2]},
                {"int": [1, 3]}, {"int": [1, 8], "log": True}, 0.5, [0.5, 1.0], False):
        d = Distribution.model_validate(raw)
        assert d.model_dump() == (list(raw) if isinstance(raw, tuple) else raw)
    assert Distribution(grid=[1, 2]).values() == [1, 2]
    assert Distribution.model_validate(0.3).kind == "constant"
    with pytest.raises(ValueError):
        Distribution.model_validate({"uniform": [1.0, 0.0]})
    with pytest.raises(ValueError):
        Distribution.model_validate({"grid": [1], "choice": [2]})
    with pytest.raises(ValueError):
        Distribution.model_validate({"loguniform": [0.0, 1.0]})
    with pytest.raises(ValueError, match="constant or one of"):
        Distribution.model_validate({"gird": [1]})


def test_spec_round_trips_through_yaml():
    s = spec(space={"kde_weight": {"grid": [0, 0.1]}, "base_lr": {"loguniform": [1e-4, 1e-2]}},
             search={"algorithm": "random", "num_samples": 3}, arms=[{"name": "a", "overrides": {"koleo_weight": 0.1}}])
    again = spec_from_dict(yaml.safe_load(s.to_yaml()))
    assert again == s
    assert expand_trials(again) == expand_trials(s)  # random draws are seeded


def test_grid_arms_seeds_and_order():
    s = spec(space={"kde_weight": {"grid": [0.0, 0.1]}, "hed_strength": 0.0},
             arms=[{"name": "base"}, {"name": "+koleo", "overrides": {"koleo_weight": 0.1}}], seeds=[0, 1],
             search={"num_samples": 2})
    trials = expand_trials(s)
    assert len(trials) == 2 * 2 * 2 * 2
    # every arm of seed 0 comes before seed 1 (partial sweeps already compare arms)
    assert [t["seed"] for t in trials[:4]] == [0, 0, 0, 0]
    assert trials[2]["arm"] == "+koleo" and trials[2]["overrides"]["loss.koleo_weight"] == 0.1
    assert all(t["overrides"]["seed"] == t["seed"] for t in trials)
    assert [t["index"] for t in trials] == list(range(len(trials)))


def test_random_search_is_seeded_and_in_bounds():
    s = spec(space={"base_lr": {"loguniform": [1e-4, 1e-2]}, "n_slides": {"int": [1, 3]}},
             search={"algorithm": "random", "num_samples": 20, "seed": 3})
    a, b = expand_trials(s), expand_trials(s)
    assert a == b
    lrs = [t["params"]["base_lr"] for t in a]
    assert all(1e-4 <= v <= 1e-2 for v in lrs) and len(set(lrs)) == 20
    assert {t["params"]["n_slides"] for t in a} <= {1, 2, 3}


def test_errors_name_the_field_and_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match="kde_weigth.*did you mean kde_weight"):
        spec(space={"kde_weigth": {"grid": [0.0]}})
    with pytest.raises(ConfigError, match="continuous.*random or optuna"):
        spec(space={"kde_weight": {"uniform": [0.0, 1.0]}})
    with pytest.raises(ConfigError, match=r"(?s)trial 1.*loss.kde_weight"):
        expand_trials(spec(space={"kde_weight": {"grid": [0.1, -1.0]}}))
    with pytest.raises(ConfigError, match="max_tissue"):
        spec(overrides={"max_tissue": 1})
    with pytest.raises(ConfigError, match="base"):
        spec(base="no_such_preset")
    with pytest.raises(ConfigError, match="data.slides"):
        expand_trials(spec(overrides={"data.slides": str(tmp_path / "missing")}))
    with pytest.raises(ConfigError, match="baseline_arm"):
        spec(arms=[{"name": "a"}], meta={"baseline_arm": "b"})
    with pytest.raises(ConfigError, match="duplicate"):
        spec(arms=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ConfigError, match="resources.gpu|gpu"):
        spec(resources={"gpu": -1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_spec(bad)
    # optuna: every bound is validated before launch
    with pytest.raises(ConfigError, match=r"(?s)lower bounds.*got -0.5"):
        expand_trials(spec(space={"kde_weight": {"uniform": [-0.5, 0.1]}}, search={"algorithm": "optuna"}))


# --------------------------------------------------------------------------------------- collection
def _fake_trial(sweep_dir: Path, i: int, status: str, steps: int, objective: float | None, kde: float) -> Path:
    """A trial folder in the documented layout (what the trainable writes)."""
    d = sweep_dir / f"trial_x_{i:05d}"
    for s in range(1, steps + 1):
        append_jsonl(d / "metrics.jsonl", {"step": s, "stage": "main", "loss": 10.0 - s - kde, "lr": 1e-3,
                                            "time_s": 0.5 * s, "tiles_seen": 8 * s})
    append_jsonl(d / "metrics.jsonl", {"step": steps, "stage": "main", "loss": 1.0, "lr": 1e-3, "time_s": 0.5 * steps,
                                        "tiles_seen": 8 * steps})  # a re-logged step after a resume: last wins
    if objective is not None:
        pl.DataFrame({"source": ["x"] * 2, "backbone": ["trained"] * 2, "task": ["crc"] * 2, "probe": ["linear"] * 2,
                      "fold": [0, 1], "metric": ["balanced_accuracy"] * 2, "value": [objective] * 2,
                      "step": [steps] * 2, "n_train": [10, 10], "n_test": [5, 5]}).write_parquet(d / "eval.parquet")
    atomic_write_json(d / "trial.json", {
        "trial_id": f"x_{i:05d}", "index": i, "arm": None, "seed": 0, "params": {"kde_weight": kde}, "status": status,
        "gpus": 1.0, "wall_time_s": 36.0, "gpu_hours": 0.01, "tiles_seen": 8 * steps, "final_step": steps,
        "objective": {"eval/mean_balanced_accuracy": objective} if objective is not None else {}})
    return d


def test_collect_is_tidy_idempotent_and_rebuilt_from_folders(tmp_path: Path):
    sweep = tmp_path / "sw"
    atomic_write_json(sweep / "sweep_meta.json", {"sweep": "sw", "params": ["kde_weight"]})
    _fake_trial(sweep, 0, "TERMINATED", 3, 0.7, 0.0)
    _fake_trial(sweep, 1, "STOPPED", 2, None, 0.1)
    (sweep / "not_a_trial").mkdir()
    out = collect(sweep)
    df = pl.read_parquet(out)
    assert df["trial_id"].n_unique() == 2
    assert df.schema["param.kde_weight"] == pl.Float64 and df.schema["step"] == pl.Int64
    train = df.filter((pl.col("kind") == "train") & (pl.col("metric") == "loss"))
    assert train.height == 3 + 2  # deduplicated by step
    assert train.filter(pl.col("final"))["value"].to_list() == [1.0, 1.0]
    ev = df.filter(pl.col("metric") == "eval/mean_balanced_accuracy")
    assert ev["value"].to_list() == [0.7] and ev["final"].to_list() == [True]
    assert df.filter(pl.col("kind") == "eval")["task"].drop_nulls().unique().to_list() == ["crc"]
    assert df.filter(pl.col("trial_id") == "x_00001")["status"].unique().to_list() == ["STOPPED"]
    gpu_h = train.filter(pl.col("trial_id") == "x_00000").sort("step")["gpu_hours"].to_list()
    assert gpu_h == pytest.approx([0.5 / 3600, 1.0 / 3600, 1.5 / 3600])
    first = out.read_bytes()
    assert collect(sweep).read_bytes() == first  # idempotent
    status = format_status(sweep)
    assert "TERMINATED" in status and "0.7000" in status


def _collect_many(path: str, n: int) -> None:
    for _ in range(n):
        collect(path)


@pytest.mark.timeout(120)
def test_concurrent_collectors_never_corrupt(tmp_path: Path):
    sweep = tmp_path / "sw"
    for i in range(6):
        _fake_trial(sweep, i, "TERMINATED", 20, 0.5 + i / 100, i / 10)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_collect_many, args=(str(sweep), 5)) for _ in range(3)]
    for p in procs:
        p.start()
    readers_ok = 0
    while any(p.is_alive() for p in procs):
        if (sweep / "results.parquet").exists():
            df = pl.read_parquet(sweep / "results.parquet")  # never a half-written file
            assert df["trial_id"].n_unique() == 6
            readers_ok += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert not list(sweep.glob(".results.parquet.*"))  # no temp files left
    assert results_frame(sweep).equals(pl.read_parquet(sweep / "results.parquet"))


def test_collect_of_empty_or_missing_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    df = pl.read_parquet(collect(tmp_path / "empty"))
    assert df.height == 0 and "metric" in df.columns
    with pytest.raises(ConfigError.__mro__[1]):
        collect(tmp_path / "nope")


def test_cli_status_and_collect(tmp_path: Path, capsys):
    from pathfm.cli import main

    sweep = tmp_path / "sw"
    _fake_trial(sweep, 0, "ERROR", 2, None, 0.0)
    info = json.loads((sweep / "trial_x_00000" / "trial.json").read_text())
    info["error"] = "RuntimeError: boom"
    atomic_write_json(sweep / "trial_x_00000" / "trial.json", info)
    assert main(["sweep", "status", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "ERROR" in out and "boom" in out
    assert main(["sweep", "collect", str(sweep)]) == 0
    assert (sweep / "results.parquet").exists()
    assert main(["sweep", "status", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dry_run_validates_counts_and_estimates_cost(tmp_path: Path, capsys):
    from pathfm.cli import main

    rc = main(["sweep", "run", str(REPO_ROOT / "sweeps/examples/kde_smoke.yaml"), "--dry-run", "--storage",
               str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "4 trial(s)" in out and "all 4 checked" in out and "1 CPU, 0 GPU" in out
    assert "one CPU step of trial 0" in out and "estimated cost" in out and "0 GPU-hours" in out
    assert not any(tmp_path.iterdir())  # nothing launched, nothing written


def test_only_a_ray_client_server_start_failure_is_retried():
    from pathfm.sweeps.runner import client_server_failed_to_start

    msg = "Initialization failure from server:\nRuntimeError: Starting Ray client server failed. See ray_client_server_23000.err"
    assert client_server_failed_to_start("ray://head:10001", msg)
    slow = "Initialization failure from server:\nRuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`"
    assert client_server_failed_to_start("ray://head:10001", slow)  # the per-session server was too slow to start
    assert not client_server_failed_to_start("ray://head:10001", "Failed to connect to server at head:10001")
    assert not client_server_failed_to_start("head:6379", msg)  # not a Ray Client address
    assert not client_server_failed_to_start("ray://head:10001", "Connection refused")  # no server there at all
