"""Two-process DDP (gloo, CPU) equals one process on the same global batch.

Same global batch: the loader gives rank r of W the samples ``m*B*W + r*B + i``, so 2 ranks with B images
each see exactly the 2B images of a single process with batch 2B; iBOT masks are drawn for the whole
global batch and sliced per rank; Sinkhorn-Knopp normalises with all-reduced sums; gradients are averaged
by DDP. The per-device KoLeo/KDE terms are switched off here: by design (DINOv2, OpenMidnight) they see
only the local batch, so they legitimately differ between 1 and 2 processes.
"""

from __future__ import annotations

import pytest
import torch
from gloo_helpers import train_on_gloo

from pathfm.config import load_config
from pathfm.io import read_jsonl

COMMON = [
    "data.crops.n_local=2",
    "optim.steps=2",
    "optim.warmup_steps=0",
    "optim.freeze_last_layer_steps=0",
    "loss.kde_weight=0",
    "run.progress=false",
    "run.checkpoint_every=2",
    "run.threads=1",
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_step_equals_one_process_step_on_the_same_global_batch(tmp_path):
    """Sinkhorn-Knopp targets (the default). Softmax centering is not compared: its iBOT center is the
    mean of per-rank means (DINOv2's rule), which by design differs from the one-process mean."""
    from pathfm.ssl.trainer import train

    common = COMMON + ["loss.centering=sinkhorn_knopp"]
    one = train(load_config("smoke", common + ["data.batch_size=4"]), tmp_path / "one")
    train_on_gloo(2, tmp_path / "two", common + ["data.batch_size=2"])

    rec1 = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    rec2 = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in rec2] == [1, 2]
    assert rec2[-1]["tiles_seen"] == rec1[-1]["tiles_seen"] == 8  # tiles counted over both ranks
    for a, b in zip(rec1, rec2):
        for key in ("loss", "loss/dino_local", "loss/dino_global", "loss/ibot"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    t1 = torch.load(one.teacher_path, weights_only=True)["state_dict"]
    t2 = torch.load(tmp_path / "two" / "teacher_backbone.pt", weights_only=True)["state_dict"]
    for k in t1:
        torch.testing.assert_close(t2[k], t1[k], rtol=1e-4, atol=1e-6, msg=k)
    # the student moved (the comparison is not trivially between two initial states)
    s = torch.load(tmp_path / "two" / "checkpoints" / "step_00000002.pt", weights_only=True)["student"]["backbone"]
    init = load_config("smoke", common)
    from pathfm.ssl.step import build_student_teacher

    torch.manual_seed(init.seed)
    fresh, _ = build_student_teacher(init)
    assert not torch.allclose(s["blocks.0.attn.qkv.weight"], fresh.backbone.blocks[0].attn.qkv.weight)
