"""FSDP2 (run.strategy=fsdp) on CPU with gloo: a 2-process sharded run equals the 1-process run on the same
global batch, its DCP checkpoints are complete-or-absent, and a checkpoint written by 2 processes resumes
in 1 and continues as the 2-process run does.

KoLeo/KDE are off and Sinkhorn-Knopp is on for the reasons given in tests/test_ssl_ddp.py (per-device terms).
Measured on the 2-core CPU (torch 2.14): losses and gradient norms of the 2-process run differ from the
1-process run by at most 4.0e-7 relative, the resumed run from the 2-process run by 1.6e-7; teacher weights
by 6e-8 / 4e-9 absolute. The tolerances below are ~5x those.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from gloo_helpers import train_on_gloo

from pathfm.backbone import checkpoint as ckpt
from pathfm.config import load_config
from pathfm.errors import ConfigError
from pathfm.io import read_jsonl
from pathfm.ssl.sharding import check_strategy, resolve_strategy

COMMON = [
    "data.crops.n_local=2", "optim.steps=4", "optim.warmup_steps=0", "optim.freeze_last_layer_steps=0",
    "loss.kde_weight=0", "loss.centering=sinkhorn_knopp", "run.progress=false", "run.checkpoint_every=2",
    "run.keep_checkpoints=2", "run.threads=1", "run.strategy=fsdp", "optim.clip_grad=0.05",
]  # fmt: skip  (clip_grad small enough that every step clips: the sharded clipping is exercised)
LOSS_KEYS = ("loss", "loss/dino_local", "loss/dino_global", "loss/ibot", "grad_norm/backbone", "grad_norm/dino_head")


def test_auto_strategy_and_what_fsdp_refuses():
    assert resolve_strategy("auto", "vit_giant", "cuda") == "fsdp"
    assert resolve_strategy("auto", "vit_large", "cuda") == "fsdp"
    assert resolve_strategy("auto", "vit_base", "cuda") == "ddp"
    assert resolve_strategy("auto", "vit_giant", "cpu") == "ddp"
    assert resolve_strategy("fsdp", "vit_pico", "cpu") == "fsdp"
    with pytest.raises(ConfigError, match="sharded gradient scaler"):
        check_strategy("fsdp", "fp16", "cuda", probe_every=0, world_size=8)
    with pytest.raises(ConfigError, match="probe.every"):
        check_strategy("fsdp", "bf16", "cuda", probe_every=10, world_size=2)
    check_strategy("fsdp", "fp32", "cpu", probe_every=10, world_size=1)  # one process: nothing is sharded
    check_strategy("ddp", "fp16", "cuda", probe_every=10, world_size=8)


def _teacher(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_fsdp_equals_one_process_and_its_dcp_checkpoint_resumes_in_one(tmp_path):
    from pathfm.backbone.sharded_checkpoint import read_full_teacher
    from pathfm.ssl.trainer import train

    two = tmp_path / "two"
    # the sharded run also recomputes its blocks (activation checkpointing inside FSDP units): same numbers
    train_on_gloo(2, two, COMMON + ["data.batch_size=2", "model.activation_checkpointing=true"])
    one_cfg = load_config("smoke", COMMON + ["data.batch_size=4"])
    one = train(one_cfg, tmp_path / "one")

    # 1. sharded 2-process run == 1-process run (same global batch of 4)
    rec1, rec2 = read_jsonl(tmp_path / "one" / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r["step"] for r in rec2] == [1, 2, 3, 4] and rec2[-1]["tiles_seen"] == 16
    for a, b in zip(rec1, rec2):
        assert b["grad_norm/backbone"] > 0.05  # every step clipped
        for key in LOSS_KEYS:
            assert b[key] == pytest.approx(a[key], rel=2e-6, abs=1e-7), (a["step"], key)
    t1, t2 = _teacher(one.teacher_path), _teacher(two / "teacher_backbone.pt")  # rank 0 gathered it whole
    assert t1.keys() == t2.keys()
    for k in t1:
        torch.testing.assert_close(t2[k], t1[k], rtol=1e-5, atol=5e-7, msg=k)

    # 2. DCP checkpoints: directories with a sidecar over every file, no partial left, last 2 kept
    found = ckpt.list_checkpoints(two)
    assert [(s, p.name) for s, p in found] == [(2, "step_00000002.dcp"), (4, "step_00000004.dcp")]
    assert all(ckpt.verify(p) is None for _, p in found)
    assert not [p for p in ckpt.checkpoint_dir(two).iterdir() if p.name.endswith(".partial")]
    assert sorted(f.name for f in found[0][1].iterdir())[:3] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    teacher_parts = read_full_teacher(found[1][1])
    for k in t2:
        assert torch.equal(teacher_parts["backbone"][k], t2[k]), k
    # checkpoint averaging reads the teachers out of the shards
    from pathfm.backbone.averaging import export_average
    from pathfm.backbone.backbone_file import load_backbone

    averaged, _ = load_backbone(export_average(two, 2))
    first = read_full_teacher(found[0][1])["backbone"]
    for k, v in averaged.state_dict().items():
        torch.testing.assert_close(v, ((first[k].double() + t2[k].double()) / 2).float(), rtol=0, atol=1e-7, msg=k)

    # 3. resume the 2-process checkpoint of step 2 in one process: steps 3 and 4 continue the 2-process run
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(two, resumed_dir)
    with pytest.warns(UserWarning, match="saved with 2 processes, resuming with 1"):
        resumed = train(one_cfg, resumed_dir, resume=ckpt.sharded_checkpoint_path(resumed_dir, 2))
    assert resumed.final_step == 4
    rec3 = read_jsonl(resumed_dir / "metrics.jsonl")
    assert [r["step"] for r in rec3] == [1, 2, 3, 4]
    for a, b in zip(rec2[2:], rec3[2:]):
        for key in LOSS_KEYS:
            assert b[key] == pytest.approx(a[key], rel=2e-6, abs=1e-7), (a["step"], key)
    t3 = _teacher(resumed.teacher_path)
    for k in t2:
        torch.testing.assert_close(t3[k], t2[k], rtol=1e-5, atol=5e-7, msg=k)

    # 4. a sharded checkpoint whose write did not finish does not count
    newest = ckpt.sharded_checkpoint_path(resumed_dir, 4)
    (newest / "__0_0.distcp").write_bytes(b"cut short")
    assert "sha256 mismatch" in ckpt.verify(newest)
    with pytest.warns(UserWarning, match="skipping checkpoint at step 4"):
        assert ckpt.latest_valid(resumed_dir)[0].name == "step_00000002.dcp"
