"""Plain Optuna study (no Ray) on real SQLite with 2 worker processes, pruning via trial.report."""

from __future__ import annotations

from pathlib import Path

import optuna
import polars as pl
import pytest

from pathfm.sweeps.collect import read_trial, trial_dirs
from pathfm.sweeps.optuna_study import run_optuna_study
from pathfm.sweeps.spec import spec_from_dict

pytestmark = pytest.mark.slow

FAST = {"data.assume_mpp": 0.5, "optim.steps": 4, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
        "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256}


def test_plain_optuna_sqlite_two_workers_then_continue(tmp_path: Path):
    spec = spec_from_dict({
        "name": "plain", "overrides": FAST, "space": {"kde_weight": {"loguniform": [1e-3, 0.5]},
                                                      "hed_strength": {"choice": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
        "search": {"algorithm": "optuna", "num_samples": 3, "seed": 0},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    })
    sweep_dir = run_optuna_study(spec, root=tmp_path, workers=2)
    url = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="plain", storage=url)
    assert len(study.trials) == 3
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert optuna.trial.TrialState.COMPLETE in states
    # the same trial folders as Ray trials; intermediate values were reported for pruning
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)
    infos = [read_trial(d) for d in trial_dirs(sweep_dir)]
    assert sorted(i["index"] for i in infos) == [0, 1, 2]
    assert {i["status"] for i in infos} <= {"TERMINATED", "STOPPED"}
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df["trial_id"].n_unique() == 3 and "param.kde_weight" in df.columns
    # running again continues the same study (state lives in the storage)
    run_optuna_study(spec, root=tmp_path, n_trials=1, workers=1)
    assert len(optuna.load_study(study_name="plain", storage=url).trials) == 4
