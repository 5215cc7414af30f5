"""A sweep's reference rows (the honesty baselines evaluated once per sweep): the same numbers as a trial's own
baselines, collected into results.parquet as trial_id "reference", cached by key, and never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pathfm.io import atomic_write_json
from pathfm.sweeps import reference as ref_mod
from pathfm.results import REFERENCE_TRIAL_ID
from pathfm.records import SweepFolder
from pathfm.sweeps.collect import collect
from pathfm.sweeps.reference import ensure_reference, reference_config, reference_key, reference_settings
from pathfm.sweeps.spec import expand_trials, spec_from_dict, trial_overrides


def _spec(**kw):
    base = {"name": "refsweep", "overrides": {"data.assume_mpp": 0.5},
            "arms": [{"name": "a", "overrides": {"kde_weight": 0.0}}, {"name": "base", "overrides": {}},
                     {"name": "wide", "overrides": {"data.normalize_std": 0.25}}],
            "seeds": [0, 1], "meta": {"baseline_arm": "base"},
            "eval": {"tasks": ["crc"], "probes": ["knn"], "n_folds": 2}}
    base.update(kw)
    return spec_from_dict(base)


def test_reference_rows_equal_a_trials_own_baselines(make_pico_run):
    """The random-init network of the reference is the very network `evaluate(run, baselines=True)` builds."""
    from pathfm.config import load_config
    from pathfm.eval import evaluate
    from pathfm.eval.backbones import reference_backbone

    run = make_pico_run("pico_ref", 3)
    own = evaluate(str(run), tasks=["crc"], probes=["knn"], n_folds=2, output=None, progress=False, verbose=False,
                   device="cpu")
    cfg = load_config("smoke")
    ref = evaluate(reference_backbone(cfg.model, mean=cfg.data.normalize_mean, std=cfg.data.normalize_std),
                   tasks=["crc"], probes=["knn"], n_folds=2, trained=False, output=None, progress=False,
                   verbose=False, device="cpu")
    assert set(ref["backbone"].unique()) == {"random_init", "color_histogram"}
    key = ["backbone", "task", "probe", "fold", "metric"]
    mine = own.filter(pl.col("backbone") != "trained").select(*key, "value").sort(key)
    assert mine.equals(ref.select(*key, "value").sort(key))


def test_reference_config_is_the_baseline_arm_and_the_key_follows_what_changes_numbers():
    spec = _spec()
    trials = expand_trials(spec)
    arm, cfg = reference_config(spec, trials)
    assert arm == "base" and cfg.seed == 0
    settings = reference_settings(spec, cfg)
    assert settings["tasks"] == ["crc"] and settings["probes"] == ["knn"] and settings["n_folds"] == 2
    assert set(settings["task_fingerprints"]) == {"crc"}
    key = reference_key(settings)
    assert key == reference_key(reference_settings(spec, load_seeded(spec, trials, 1)))  # training seed: no
    assert key != reference_key(dict(settings, probes=["linear"]))
    _, wide = reference_config(_spec(meta={"baseline_arm": "wide"}), trials)
    assert key != reference_key(reference_settings(spec, wide))  # input normalisation: yes


def load_seeded(spec, trials, seed):
    from pathfm.config import load_config

    t = next(t for t in trials if t["arm"] == "base" and t["seed"] == seed)
    return load_config(spec.base, dict(t["overrides"]))


def test_reference_is_evaluated_once_cached_and_never_fatal(tmp_path: Path, monkeypatch):
    calls = []

    def fake_evaluate(settings, out_dir, device="auto"):
        calls.append(settings)
        if settings["probes"] == ["boom"]:
            raise RuntimeError("probe exploded")
        rows = [dict(source="reference", backbone=b, task="crc", probe=settings["probes"][0], fold=f,
                     metric="balanced_accuracy", value=v + 0.01 * f, step=0, n_train=10, n_test=5)
                for b, v in (("random_init", 0.5), ("color_histogram", 0.6)) for f in (0, 1)]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows).write_parquet(Path(out_dir) / "eval.parquet")
        return {"rows": len(rows), "wall_time_s": 1.5, "hostname": "here"}

    monkeypatch.setattr(ref_mod, "evaluate_reference", fake_evaluate)
    spec = _spec()
    trials = expand_trials(spec)
    sweep = tmp_path / "refsweep"
    info = ensure_reference(spec, sweep, trials, verbose=0)
    assert info["status"] == "DONE" and info["arm"] == "base" and len(calls) == 1
    assert SweepFolder(sweep).read_reference()["key"] == info["key"]
    assert ensure_reference(spec, sweep, trials, verbose=0)["status"] == "DONE" and len(calls) == 1  # done: kept
    other = tmp_path / "another"  # another sweep in the same storage: the cached rows, no evaluation
    info2 = ensure_reference(spec, other, trials, verbose=0)
    assert info2["status"] == "DONE" and info2.get("cached_from") and len(calls) == 1
    assert (other / "reference" / "eval.parquet").read_bytes() == (sweep / "reference" / "eval.parquet").read_bytes()
    bad = _spec(eval={"tasks": ["crc"], "probes": ["boom"], "n_folds": 2})  # fails: recorded, not raised
    info3 = ensure_reference(bad, tmp_path / "bad", trials, verbose=0)
    assert info3["status"] == "ERROR" and "probe exploded" in info3["error"]
    off = _spec(eval={"tasks": ["crc"], "reference": False})
    assert ensure_reference(off, tmp_path / "off", trials, verbose=0)["status"] == "DISABLED"
    assert not (tmp_path / "off").exists() and len(calls) == 2

    # collection: the reference rows join the trials' rows as trial_id "reference" (arm, seed, params null)
    atomic_write_json(sweep / "sweep_meta.json", {"sweep": "refsweep", "params": ["kde_weight"]})
    t = sweep / "trial_x_00000"
    atomic_write_json(t / "trial.json", {"trial_id": "x_00000", "index": 0, "arm": "base", "seed": 0,
                                         "params": {"kde_weight": 0.1}, "status": "TERMINATED", "final_step": 4})
    pl.DataFrame({"source": ["x"] * 2, "backbone": ["trained"] * 2, "task": ["crc"] * 2, "probe": ["knn"] * 2,
                  "fold": [0, 1], "metric": ["balanced_accuracy"] * 2, "value": [0.7, 0.72], "step": [4, 4],
                  "n_train": [10, 10], "n_test": [5, 5]}).write_parquet(t / "eval.parquet")
    df = pl.read_parquet(collect(sweep))
    refs = df.filter(pl.col("trial_id") == REFERENCE_TRIAL_ID)
    assert refs.height == 4 and set(refs["backbone"]) == {"random_init", "color_histogram"}
    assert refs["arm"].is_null().all() and refs["seed"].is_null().all() and refs["param.kde_weight"].is_null().all()
    assert refs["final"].all() and set(refs["kind"]) == {"eval"} and refs["wall_time_s"].to_list() == [1.5] * 4
    assert df.filter(pl.col("trial_id") == "x_00000").height == 2
    # the analysis reads them as reference rows of the table
    from pathfm.analysis.table import table_from_results

    table = table_from_results(df, probe_sel())
    assert table.references == ["random_init", "color_histogram"] and table.arms == ["base"]
    assert table.ref_mean[0, 0] == pytest.approx(0.505)


def probe_sel():
    from pathfm.analysis.load import Selection

    return Selection(probe="knn")


def test_seed_offset_trains_another_seed_but_keeps_the_replicate_label():
    spec = _spec(arms=[{"name": "base", "overrides": {}}, {"name": "null", "overrides": {}, "seed_offset": 1000}])
    trials = expand_trials(spec)
    null = [t for t in trials if t["arm"] == "null"]
    assert [t["seed"] for t in null] == [0, 1]  # the replicate label pairs it with the baseline
    assert [t["overrides"]["seed"] for t in null] == [1000, 1001]  # the training seed
    assert trial_overrides(spec, "base", 1, {})["seed"] == 1


def test_cli_reference_evaluates_a_sweep_without_reference_rows(tmp_path: Path, monkeypatch, capsys):
    """`pathfm sweep reference DIR` for a sweep from before reference rows (or whose reference failed)."""
    from pathfm.cli import main
    from pathfm.records.sweep_folder import SPEC_FILE, TRIALS_FILE

    seen = []

    def fake_evaluate(settings, out_dir, device="auto"):
        seen.append(device)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        pl.DataFrame([dict(source="r", backbone="random_init", task="crc", probe="knn", fold=0,
                           metric="balanced_accuracy", value=0.5, step=0, n_train=1, n_test=1)]).write_parquet(
            Path(out_dir) / "eval.parquet")
        return {"rows": 1, "wall_time_s": 0.1}

    monkeypatch.setattr(ref_mod, "evaluate_reference", fake_evaluate)
    spec = _spec(eval={"tasks": ["crc"], "probes": ["knn"], "n_folds": 2, "reference": False})
    sweep = tmp_path / "old"
    sweep.mkdir()
    (sweep / SPEC_FILE).write_text(spec.to_yaml())
    (sweep / TRIALS_FILE).write_text(json.dumps(expand_trials(spec)))
    assert main(["sweep", "reference", str(sweep), "--device", "cpu"]) == 0
    assert seen == ["cpu"] and "results.parquet" in capsys.readouterr().out
    assert pl.read_parquet(sweep / "results.parquet")["trial_id"].to_list() == ["reference"]
