"""Plain Optuna study (no Ray) on real SQLite with 2 worker processes, pruning via trial.report; the
trial budget is the study's total; a killed worker's trial is failed by its heartbeat and retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml
from optuna.trial import TrialState

from pathfm.backbone import checkpoint as ckpt
from pathfm.records import SweepFolder, read_trial
from pathfm.sweeps.optuna_study import TRIAL_DIR_ATTR, budget, run_optuna_study
from pathfm.sweeps.spec import spec_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAST = {"data.assume_mpp": 0.5, "optim.steps": 4, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
        "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256}


def _states(study) -> list[TrialState]:
    return [t.state for t in study.trials]


def test_plain_optuna_sqlite_two_workers_then_continue_to_the_total(tmp_path: Path):
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
    states = set(_states(study))
    assert states <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.COMPLETE in states
    # the same trial folders as Ray trials; intermediate values were reported for pruning
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)
    infos = [read_trial(d) for d in SweepFolder(sweep_dir).trial_dirs()]
    assert sorted(i["index"] for i in infos) == [0, 1, 2]
    assert {i["status"] for i in infos} <= {"TERMINATED", "STOPPED"}
    assert all(i["final_step"] < 4 for i in infos if i["status"] == "STOPPED")  # never pruned at its last step
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df["trial_id"].n_unique() == 3 and "param.kde_weight" in df.columns
    # running again with the same spec: the budget (3) is used, nothing new runs
    run_optuna_study(spec, root=tmp_path, workers=2)
    assert len(optuna.load_study(study_name="plain", storage=url).trials) == 3
    # --n-trials is the TOTAL: 4 means one more, not 4 more; the new trial samples a new point
    run_optuna_study(spec, root=tmp_path, n_trials=4, workers=1)
    trials = optuna.load_study(study_name="plain", storage=url).trials
    assert len(trials) == 4 and trials[3].params not in [t.params for t in trials[:3]]
    assert len(SweepFolder(sweep_dir).trial_dirs()) == 4


def test_budget_counts_a_retried_failure_once():
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0, params={"x": 0.1}, distributions=dist))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=dist))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.3}, distributions=dist))  # raised
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.4}, distributions=dist))  # worker died
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params={"x": 0.4}, distributions=dist,
                                        system_attrs={"failed_trial": 3, "retry_history": [3]}))
    assert budget(study) == {"finished": 3, "running": 0, "waiting": 1, "retried": 1, "used": 4}


KILL_SPEC = {
    "name": "killworker",
    "overrides": dict(FAST, **{"optim.steps": 10}),
    "space": {"kde_weight": {"loguniform": [1e-3, 0.5]}},
    "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 2,
    "search": {"algorithm": "optuna", "num_samples": 2, "seed": 0},
}


def _valid_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (a write cut short by the kill has no sidecar and does not count)."""
    return [s for s, p in ckpt.list_checkpoints(run_dir) if ckpt.verify(p) is None]


def _stop_worker_mid_trial(spec_path: Path, root: Path, first: Path, log_path: Path, heartbeat: int, sig: int) -> None:
    """Run `pathfm sweep optuna` in a subprocess and send it ``sig`` once its first trial is RUNNING and has
    written a checkpoint."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "pathfm.cli", "sweep", "optuna", str(spec_path), "--dir", str(root),
                             "--heartbeat", str(heartbeat)], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if _valid_steps(first) and (read_trial(first) or {}).get("status") == "RUNNING":
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the first trial never wrote a checkpoint")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_killed_worker_trial_fails_by_heartbeat_and_its_retry_resumes_and_completes(tmp_path: Path):
    spec_path = tmp_path / "killworker.yaml"
    spec_path.write_text(yaml.safe_dump(KILL_SPEC))
    root = tmp_path / "sweeps"
    sweep_dir = root / "killworker"
    first = sweep_dir / "optuna_00000"
    _stop_worker_mid_trial(spec_path, root, first, tmp_path / "run.log", heartbeat=1, sig=signal.SIGKILL)
    url = f"sqlite:///{sweep_dir / 'optuna.db'}"
    assert _states(optuna.load_study(study_name="killworker", storage=url)) == [TrialState.RUNNING]
    killed_at = max(_valid_steps(first))

    # a budget of 1 is in use by the dead worker's RUNNING trial: the launcher waits until its heartbeat is
    # stale (2 s), Optuna marks it FAIL and queues a retry, which resumes in the same folder and completes
    run_optuna_study(spec_path, root=root, n_trials=1, heartbeat_s=1)
    study = optuna.load_study(study_name="killworker", storage=url)
    killed, retry = study.trials
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == killed.params
    assert retry.user_attrs[TRIAL_DIR_ATTR] == "optuna_00000"
    assert budget(study) == {"finished": 1, "running": 0, "waiting": 0, "retried": 1, "used": 1}
    info = read_trial(first)
    assert info["status"] == "TERMINATED" and info["attempts"] == 2
    assert info["restored_from_step"] >= killed_at and info["final_step"] == 10  # resumed, not restarted
    # the spec's budget (2): one new trial, the retried failure is not counted twice
    run_optuna_study(spec_path, root=root, heartbeat_s=1)
    study = optuna.load_study(study_name="killworker", storage=url)
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert sorted(d.name for d in SweepFolder(sweep_dir).trial_dirs()) == ["optuna_00000", "optuna_00002"]
    # and once more: nothing left to do
    run_optuna_study(spec_path, root=root, heartbeat_s=1)
    assert len(optuna.load_study(study_name="killworker", storage=url).trials) == 3


def test_sigterm_stops_the_trial_which_is_retried_at_once_on_the_next_run(tmp_path: Path):
    spec_path = tmp_path / "killworker.yaml"
    spec_path.write_text(yaml.safe_dump(dict(KILL_SPEC, name="termworker")))
    root = tmp_path / "sweeps"
    sweep_dir = root / "termworker"
    first = sweep_dir / "optuna_00000"
    # SIGTERM: what a batch scheduler sends before it kills the job
    _stop_worker_mid_trial(spec_path, root, first, tmp_path / "run.log", heartbeat=600, sig=signal.SIGTERM)
    url = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="termworker", storage=url)
    assert _states(study) == [TrialState.FAIL, TrialState.WAITING]  # queued for retry, no heartbeat wait
    killed_at = max(_valid_steps(first))
    t0 = time.time()
    run_optuna_study(spec_path, root=root, n_trials=1, heartbeat_s=600)
    assert time.time() - t0 < 300  # did not wait for the 1200 s grace period
    study = optuna.load_study(study_name="termworker", storage=url)
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    info = read_trial(first)
    assert info["status"] == "TERMINATED" and info["restored_from_step"] >= killed_at
