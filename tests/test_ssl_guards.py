"""Collapse / divergence guards: the pure judgement on records, and real tiny training runs they stop or spare."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pathfm.config import GuardsConfig, load_config
from pathfm.data.provenance import read_training_slides
from pathfm.errors import ConfigError
from pathfm.io import read_jsonl
from pathfm.records.run_folder import GUARD_FILE
from pathfm.ssl.diagnostics import effective_rank
from pathfm.ssl.guards import Guards, GuardState, read_guard_trip, violations
from pathfm.ssl.trainer import train

LN_K = math.log(128)
HEALTHY = {"step": 5, "loss": 7.0, "diag/dino_target_entropy": 0.9 * LN_K, "diag/dino_ln_k": LN_K,
           "diag/teacher_cls_std": 0.4, "diag/teacher_cls_rank": 2.8}
# a faster variant of the presets: 4 images per step, 2 local crops, no progress bar, one thread
TINY = ["data.batch_size=4", "data.crops.n_local=2", "run.progress=false", "optim.warmup_steps=1",
        "optim.teacher_temp_warmup_steps=2", "optim.freeze_last_layer_steps=1", "run.checkpoint_every=100",
        "run.threads=1"]


def test_each_threshold_names_its_reason_and_only_fires_past_it():
    cfg = GuardsConfig()
    assert violations(HEALTHY, cfg, GuardState()) == []
    cases = {
        "diag/dino_target_entropy": (0.985 * LN_K, "collapsed"),
        "diag/teacher_cls_std": (5e-4, "collapsed"),
        "diag/teacher_cls_rank": (1.2, "collapsed"),
    }
    for key, (value, reason) in cases.items():
        found = violations(dict(HEALTHY, **{key: value}), cfg, GuardState())
        assert [(v.reason, v.signal.split(" ")[0]) for v in found] == [(reason, key)]
    # just inside each threshold: nothing
    inside = dict(HEALTHY, **{"diag/dino_target_entropy": 0.975 * LN_K, "diag/teacher_cls_std": 1.1e-3,
                              "diag/teacher_cls_rank": 1.6})
    assert violations(inside, cfg, GuardState()) == []
    # the loss against the lowest loss so far: 4x is the edge
    state = GuardState(min_loss=2.0)
    assert violations(dict(HEALTHY, loss=7.9), cfg, state) == []
    (v,) = violations(dict(HEALTHY, loss=8.2), cfg, state)
    assert (v.reason, v.value) == ("diverged", pytest.approx(4.1))
    # the probe against its best so far
    state = GuardState(best_probe={"crc": 0.80})
    assert violations(dict(HEALTHY, **{"probe/crc/balanced_accuracy": 0.71}), cfg, state) == []
    (v,) = violations(dict(HEALTHY, **{"probe/crc/balanced_accuracy": 0.69}), cfg, state)
    assert (v.reason, v.value) == ("probe_dropped", pytest.approx(0.11))
    # null switches a check off
    off = GuardsConfig(min_teacher_cls_std=None, min_effective_rank=None, max_target_entropy_fraction=None)
    assert violations(dict(HEALTHY, **{"diag/teacher_cls_std": 0.0, "diag/teacher_cls_rank": 1.0,
                                       "diag/dino_target_entropy": LN_K}), off, GuardState()) == []


def test_patience_start_step_and_memory_across_records(tmp_path):
    guards = Guards(GuardsConfig(patience=3, start_step=2), tmp_path)
    collapsed = dict(HEALTHY, **{"diag/teacher_cls_std": 0.0})
    assert guards.check(dict(collapsed, step=1)) is None  # before start_step
    assert guards.check(dict(collapsed, step=2)) is None
    assert guards.check(dict(collapsed, step=3)) is None
    assert guards.check(dict(HEALTHY, step=4)) is None  # a healthy record resets the streak
    assert guards.check(dict(collapsed, step=5)) is None
    assert guards.check(dict(collapsed, step=6)) is None
    assert not (tmp_path / GUARD_FILE).exists()
    trip = guards.check(dict(collapsed, step=7))
    assert (trip.reason, trip.step, trip.signal) == ("collapsed", 7, "diag/teacher_cls_std")
    assert read_guard_trip(tmp_path)["reason"] == "collapsed"
    # the probe's best is remembered across records, before start_step too
    g = Guards(GuardsConfig(patience=1, start_step=3))
    g.check({"step": 1, "probe/pcam/balanced_accuracy": 0.9})
    assert g.check({"step": 3, "probe/pcam/balanced_accuracy": 0.85}) is None
    assert g.check({"step": 4, "probe/pcam/balanced_accuracy": 0.75}).reason == "probe_dropped"


def test_effective_rank_of_identical_and_orthogonal_rows():
    assert effective_rank(torch.ones(8, 16) * 3).item() == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(torch.eye(6)).item() == pytest.approx(6.0, rel=1e-4)
    # a diverged step's CLS (NaN) gives NaN, not an SVD error, so the loss check can name the cause
    assert math.isnan(effective_rank(torch.full((4, 8), float("nan"))).item())


def test_guards_config_from_overrides():
    assert load_config("smoke").run.guards is None  # off unless asked for
    assert load_config("smoke", ["run.guards={}"]).run.guards == GuardsConfig()
    cfg = load_config("smoke", ["run.guards.patience=2", "run.guards.min_effective_rank=null"])
    assert (cfg.run.guards.patience, cfg.run.guards.min_effective_rank) == (2, None)
    with pytest.raises(ConfigError, match="run.guards.patience"):
        load_config("smoke", ["run.guards.patience=0"])


def test_a_collapsing_run_is_stopped_as_collapsed_within_patience_steps(tmp_path):
    """The smoke preset's LayerScale 1e-5 gives every image the same teacher CLS: exactly uniform targets
    (docs/training-health.md). With patience 2 the run must stop at step 2 of 20."""
    cfg = load_config("smoke", TINY + ["optim.steps=20", "run.guards={patience: 2}"])
    result = train(cfg, tmp_path / "run")
    assert (result.final_step, result.stopped_early, result.stop_reason) == (2, True, "collapsed")
    trip = json.loads((tmp_path / "run" / GUARD_FILE).read_text())
    assert trip["reason"] == "collapsed" and trip["step"] == 2
    assert (tmp_path / "run" / "DONE").read_text().strip() == "stopped at step 2: collapsed"
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


def test_a_healthy_run_is_not_stopped(tmp_path):
    """The cpu preset's settings (no LayerScale, no photometric augmentation): default guards let it run."""
    cfg = load_config("cpu", TINY + ["optim.steps=6", "optim.warmup_steps=2", "run.guards={}"])
    result = train(cfg, tmp_path / "run")
    assert (result.final_step, result.stopped_early, result.stop_reason) == (6, False, None)
    assert not (tmp_path / "run" / GUARD_FILE).exists()
    rec = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert rec["diag/teacher_cls_std"] > 0.01 and rec["diag/teacher_cls_rank"] > 2.0
    # every run records the slides it trained on (the leakage audit's input): the bundled manifest's three
    trained = read_training_slides(tmp_path / "run")
    assert {(r["slide_id"], r["patient_id"]) for r in trained} == {
        ("CMU-1-Small-Region", "CMU-1"), ("CMU-1-Small-Region.generic-tiled-pyramid", "CMU-1"),
        ("TCGA-CR-7395-01A-01-TS1", "TCGA-CR-7395")}


def test_a_nan_loss_stops_as_diverged_without_saving(tmp_path, nan_dino_head_from_call):
    cfg = load_config("cpu", TINY + ["optim.steps=6", "run.guards={}", "data.batch_size=2"])
    with nan_dino_head_from_call(3):
        result = train(cfg, tmp_path / "run")
    assert (result.final_step, result.stop_reason) == (2, "diverged")
    trip = read_guard_trip(tmp_path / "run")
    assert trip["step"] == 3 and "loss/dino_local is nan at step 3" in trip["message"]
    assert (tmp_path / "run" / "DONE").read_text().strip() == "stopped at step 2: diverged"


def test_a_resumed_run_continues_its_guard_windows(tmp_path):
    """The guard streaks live in the checkpoint (TrainState.guards): a run interrupted after 2 collapsed
    steps (patience 3) and resumed trips at step 3, as the uninterrupted run does; a fresh window would
    trip only at step 4."""
    from pathfm.backbone import checkpoint as ckpt
    from pathfm.ssl.train_state import TrainState
    from pathfm.ssl.trainer import StopTraining

    cfg = load_config("smoke", TINY + ["optim.steps=20", "run.guards={patience: 3}"])

    class StopAt2:
        def on_log(self, rec):
            if rec["step"] == 2:
                raise StopTraining

    part = train(cfg, tmp_path / "run", callbacks=[StopAt2()])
    assert (part.final_step, part.stop_reason) == (2, None)
    saved = TrainState.from_payload(ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", 2)))
    assert saved.guards["streaks"]["collapsed|diag/dino_target_entropy / ln K"] == 2
    assert set(saved.guards["streaks"].values()) == {2}
    resumed = train(cfg, tmp_path / "run", resume=True)
    assert (resumed.final_step, resumed.stopped_early, resumed.stop_reason) == (3, True, "collapsed")
    assert json.loads((tmp_path / "run" / GUARD_FILE).read_text())["step"] == 3
