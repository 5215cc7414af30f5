"""The trainer on the bundled real slides: smoke run, resume, checkpoints, stages, non-finite losses, SIGTERM."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pathfm.backbone import checkpoint as ckpt
from pathfm.backbone.backbone_file import load_backbone
from pathfm.config import load_config
from pathfm.errors import ConfigError, NonFiniteLossError, PathfmError, TrainingInterrupted
from pathfm.io import read_jsonl
from pathfm.ssl.train_state import rng_state, set_rng_state
from pathfm.ssl.trainer import DIAGNOSTIC_KEYS, METRIC_KEYS, StopTraining, train

# a faster variant of the smoke preset for the tests that are not about the preset itself
TINY = [
    "data.batch_size=4",
    "data.crops.n_local=2",
    "run.progress=false",
    "optim.warmup_steps=1",
    "optim.teacher_temp_warmup_steps=2",
    "optim.freeze_last_layer_steps=1",
]


def _losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_preset_via_cli_on_real_slides_loss_falls(tmp_path, monkeypatch, capsys):
    """`pathfm train configs/smoke.yaml` as a new user runs it: run dir, metrics, export, DONE, falling loss."""
    from pathfm.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "configs/smoke.yaml", "run.progress=false"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "done:" in capsys.readouterr().out
    for name in ("config.yaml", "metrics.jsonl", "teacher_backbone.pt", "DONE"):
        assert (run_dir / name).exists(), name
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 31))
    assert set(records[0]) == set(METRIC_KEYS) | set(DIAGNOSTIC_KEYS) | {"diag/layerscale"}
    assert all(r["stage"] == "main" for r in records)
    assert records[-1]["tiles_seen"] == 30 * 8 and records[-1]["tiles_accepted"] == 240
    assert 0 < records[-1]["acceptance_rate"] <= 1
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.3, (first, last)
    parts = sum(records[-1][f"loss/{k}"] for k in ("dino_local", "dino_global", "ibot", "koleo", "kde"))
    assert records[-1]["loss"] == pytest.approx(parts)
    assert records[-1]["loss/kde"] < 0 and records[-1]["loss/koleo"] == 0  # smoke: KDE on, KoLeo off
    # lr warmup starts at exactly 0; the teacher temperature warms up 0.04 -> 0.07
    assert records[0]["lr"] == 0.0 and records[0]["teacher_temp"] == pytest.approx(0.04)
    assert records[-1]["teacher_temp"] == pytest.approx(0.07)
    steps = [s for s, _ in ckpt.list_checkpoints(run_dir)]
    assert steps == [20, 30]  # checkpoint_every 10, keep 2
    model, meta = load_backbone(run_dir / "teacher_backbone.pt")
    assert meta["step"] == 30 and meta["model"]["arch"] == "vit_pico"
    out = model.forward_features(torch.zeros(1, 3, 112, 112))
    assert out["cls"].shape == (1, 96)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_is_bit_identical_on_cpu(tmp_path):
    overrides = TINY + ["optim.steps=4", "run.checkpoint_every=2", "loss.centering=softmax",
                        "model.drop_path=0.2", "optim.grad_accum=2", "loss.koleo_weight=0.1"]  # fmt: skip
    cfg = load_config("smoke", overrides)
    full = train(cfg, tmp_path / "full")

    class StopAt3:
        def on_log(self, rec):
            if rec["step"] == 3:
                raise StopTraining

    part = train(cfg, tmp_path / "part", callbacks=[StopAt3()])
    assert part.stopped_early and part.final_step == 3
    # a crash after step 3: the newest checkpoint is truncated -> resume falls back to step 2
    newest = ckpt.checkpoint_path(tmp_path / "part", 3)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="skipping checkpoint at step 3"):
        resumed = train(cfg, tmp_path / "part", resume=True)
    assert resumed.final_step == 4 and not resumed.stopped_early
    assert [r["step"] for r in read_jsonl(tmp_path / "part" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")  # exact equality
    a = torch.load(full.teacher_path, weights_only=True)["state_dict"]
    b = torch.load(resumed.teacher_path, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run resumed again does nothing
    again = train(cfg, tmp_path / "part", resume=True)
    assert again.final_step == 4


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_highres_stage_chains_with_interpolated_pos_embed(tmp_path):
    cfg = load_config("smoke", TINY + [
        "optim.steps=2", "highres.enabled=true", "highres.steps=2", "highres.tile_size=192",
        "highres.global_size=168", "highres.local_size=84", "highres.batch_size=2", "data.n_slides=1",
    ])  # fmt: skip
    result = train(cfg, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["stage"]) for r in records] == [(1, "main"), (2, "main"), (3, "highres"), (4, "highres")]
    assert records[2]["lr"] == pytest.approx(cfg.highres.base_lr)  # its own schedule, no warmup
    assert records[3]["tiles_seen"] == 2 * 4 + 2 * 2
    model, meta = load_backbone(result.teacher_path)
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 96)  # stored grid unchanged; interpolated to 12x12
    assert model.forward_features(torch.zeros(1, 3, 168, 168))["patch"].shape == (1, 144, 96)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", 4))
    assert state["stage"] == "highres" and state["progress"]["stage_step"] == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_non_finite_loss_stops_with_named_loss_and_saves_nothing_corrupt(tmp_path, nan_dino_head_from_call):
    cfg = load_config("smoke", TINY + ["optim.steps=6", "run.checkpoint_every=2"])
    with nan_dino_head_from_call(4):
        with pytest.raises(NonFiniteLossError, match=r"loss/dino_local is nan at step 4"):
            train(cfg, tmp_path / "run")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    path, state = ckpt.latest_valid(tmp_path / "run")
    assert state["progress"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["student"]["backbone"].values())
    assert not (tmp_path / "run" / "DONE").exists()
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_existing_run_dir_needs_resume_and_resume_needs_a_checkpoint(tmp_path):
    cfg = load_config("smoke", TINY)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(PathfmError, match="resume"):
        train(cfg, tmp_path / "empty", resume=True)
    ckpt.save_checkpoint(tmp_path, 1, {"progress": {}}, keep=2)
    with pytest.raises(PathfmError, match="already holds checkpoints"):
        train(cfg, tmp_path)


def test_checkpoints_atomic_sidecar_keep_last_and_corruption_fallback(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step))}, keep=3)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3, 4]
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))
    assert ckpt.verify(ckpt.checkpoint_path(tmp_path, 4)) is None
    # flip one byte of the newest, drop the sidecar of the next: both are skipped
    p4 = ckpt.checkpoint_path(tmp_path, 4)
    data = bytearray(p4.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p4.write_bytes(bytes(data))
    p3 = ckpt.checkpoint_path(tmp_path, 3)
    p3.with_name(p3.name + ".sha256").unlink()
    path, state = ckpt.latest_valid(tmp_path)
    assert path.name == "step_00000002.pt" and torch.equal(state["w"], torch.full((3,), 2.0))
    with pytest.raises(ckpt.CheckpointError, match="sha256 mismatch"):
        ckpt.load_checkpoint(p4)


def test_diagnostics_ride_along_with_every_logged_step(tmp_path):
    """Diagnostics are computed only for the steps that write a record (run.log_every, and the last)."""
    train(load_config("smoke", TINY + ["optim.steps=5", "run.log_every=2", "run.checkpoint_every=100"]), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 5]
    assert all(set(DIAGNOSTIC_KEYS) <= set(r) and math.isfinite(r["diag/dino_ce_per_pair"]) for r in records)


def test_a_killed_first_checkpoint_write_does_not_block_a_fresh_start(tmp_path):
    """A trial killed while writing its first checkpoint leaves step_*.pt without a sidecar; its retry finds
    nothing to resume, sets the unusable file aside and trains from scratch in the same folder."""
    from pathfm.sweeps.trainable import resume_point

    ckpt.save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)}, keep=2)
    ckpt.save_checkpoint(tmp_path, 4, {"w": torch.ones(3)}, keep=2)
    for step in (2, 4):
        p = ckpt.checkpoint_path(tmp_path, step)
        p.with_name(p.name + ".sha256").unlink()  # as if killed between the file and its sidecar
    with pytest.warns(UserWarning, match="no .sha256 sidecar"):
        assert resume_point(tmp_path, None) == (False, 0)
    assert ckpt.list_checkpoints(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000002.pt.unusable", "step_00000004.pt.unusable"]
    train(load_config("smoke", TINY + ["optim.steps=2", "run.checkpoint_every=2"]), tmp_path)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    # a valid checkpoint is resumed, never set aside
    assert resume_point(tmp_path, None)[1] == 2 and ckpt.set_aside_unusable(tmp_path) == []


def test_probe_every_without_a_probe_is_refused_before_anything_is_written(tmp_path):
    """The in-training probe is evaluation's (pathfm.eval.hook.probe_teacher), handed to train(); a config
    that asks for it without one fails at once, naming the field and the fix."""
    with pytest.raises(ConfigError, match=r"probe.every=2 .*probe=pathfm.eval.hook.probe_teacher"):
        train(load_config("smoke", TINY + ["probe.every=2"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_saves_the_step_it_ends_and_the_run_resumes_bit_identically(tmp_path):
    """A real SIGTERM to this process after step 3 (as Ray, SLURM and Kubernetes send before a kill): the step
    ends, its checkpoint is saved although checkpoint_every is 100, TrainingInterrupted names it, no DONE is
    written, the handler is put back, and the resumed run equals an uninterrupted one exactly."""
    cfg = load_config("smoke", TINY + ["optim.steps=5", "run.checkpoint_every=100", "model.drop_path=0.2"])
    full = train(cfg, tmp_path / "full")

    class SigtermAt3:
        def on_log(self, rec):
            if rec["step"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM: stopped after step 3, its checkpoint saved .*step_00000003\.pt"):
        train(cfg, tmp_path / "part", callbacks=[SigtermAt3()])
    assert signal.getsignal(signal.SIGTERM) is before
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "part")] == [3]
    assert not (tmp_path / "part" / "DONE").exists()
    resumed = train(cfg, tmp_path / "part", resume=True)
    assert resumed.final_step == 5
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")  # exact equality
    a = torch.load(full.teacher_path, weights_only=True)["state_dict"]
    b = torch.load(resumed.teacher_path, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pathfm_train_on_sigterm_says_where_it_saved_and_exits_143(tmp_path, repo_root):
    """`pathfm train` in its own process, SIGTERM once its first step is logged (read from metrics.jsonl, with
    2 DataLoader workers in the same process group, as a scheduler signals them): one line, exit 143."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pathfm.cli", "train", "smoke", *TINY, "optim.steps=2000", "run.log_every=1",
           "data.num_workers=2", "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no step logged in 240 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole process group: trainer and loader workers
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    (line,) = [ln for ln in err.splitlines() if "SIGTERM" in ln]
    assert line.startswith("pathfm train: SIGTERM: stopped after step ") and f"resume={run}" in line
    assert "Traceback" not in err
    step = int(line.split("stopped after step ")[1].split(",")[0])
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [step]
