"""A guard-stopped trial in a sweep: its reason in trial.json, the results table, the status table, and
Optuna (plain study on real SQLite) records it as PRUNED with the reason."""

from __future__ import annotations

from pathlib import Path

import optuna
import polars as pl
import pytest
from optuna.trial import TrialState

from pathfm.records import read_trial
from pathfm.sweeps.collect import collect
from pathfm.sweeps.optuna_study import run_optuna_study
from pathfm.sweeps.runner import format_status
from pathfm.sweeps.spec import expand_trials, spec_from_dict
from pathfm.sweeps.trainable import run_trial

FAST = {"data.assume_mpp": 0.5, "optim.steps": 5, "optim.warmup_steps": 1, "run.checkpoint_every": 100,
        "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256,
        "run.guards": {"patience": 2}}


def _spec(name: str, **kw):
    base = {"name": name, "overrides": FAST, "objective": {"metric": "loss", "mode": "min"},
            "eval": {"enabled": False}, "report_every": 1}
    return spec_from_dict(dict(base, **kw))


def test_collapsed_trial_stops_with_its_reason_in_the_sweep_tables(tmp_path: Path):
    # smoke's LayerScale 1e-5: exactly uniform targets (collapsed); without it the first steps are healthy
    spec = _spec("guarded", space={"model.layerscale": {"grid": [1e-5, None]}})
    reports: dict[int, list[dict]] = {0: [], 1: []}
    for trial in expand_trials(spec):
        i = trial["index"]
        run_trial(spec, trial, tmp_path / f"trial_{i}", trial_id=f"t{i}", sweep=spec.name,
                  report=lambda m, checkpoint=None, i=i: reports[i].append(m))
    collapsed, healthy = read_trial(tmp_path / "trial_0"), read_trial(tmp_path / "trial_1")
    assert (collapsed["status"], collapsed["stopped_by"], collapsed["stop_reason"]) == ("STOPPED", "guard", "collapsed")
    assert collapsed["final_step"] == 2 and collapsed["guard"]["step"] == 2
    assert (healthy["status"], healthy.get("stop_reason"), healthy["final_step"]) == ("TERMINATED", None, 5)
    # what the trial told Tune last: the guard's flag, no objective (the Optuna searcher prunes it)
    assert reports[0][-1]["guard/collapsed"] == 1.0 and "guard/collapsed" not in reports[1][-1]
    df = pl.read_parquet(collect(tmp_path))
    by_trial = dict(df.group_by("trial_id").agg(pl.col("stop_reason").first()).iter_rows())
    assert by_trial == {"t0": "collapsed", "t1": None}
    table = format_status(tmp_path)
    assert table.count("STOPPED (collapsed)") == 1 and "TERMINATED (" not in table


@pytest.mark.slow  # ~6 s: a plain Optuna study on real SQLite around one 2-step trial
@pytest.mark.timeout(600)
def test_plain_optuna_prunes_a_collapsed_trial_and_keeps_the_reason(tmp_path: Path):
    spec = _spec("optuna_guard", space={"kde_weight": {"choice": [0.05]}},
                 search={"algorithm": "optuna", "num_samples": 1, "seed": 0})
    sweep_dir = run_optuna_study(spec, root=tmp_path, workers=1)
    (trial,) = optuna.load_study(study_name="optuna_guard", storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials
    assert trial.state == TrialState.PRUNED and trial.user_attrs["stop_reason"] == "collapsed"
