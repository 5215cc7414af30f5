"""model.compile: how many variants of the compiled block a run compiles.

All blocks share ``Block.forward``'s code object and so one cache of compiled variants, capped by
``torch._dynamo.config.recompile_limit`` (8); past the cap later calls run uncompiled, and every new
compile stalls its rank mid-run. CPU stand-in for the GPU run: torch.compile with the ``aot_eager``
backend (no inductor code generation, seconds) under CPU bf16 autocast, which casts like CUDA autocast.
"""

from __future__ import annotations

import torch
from torch._dynamo.utils import counters

from pathfm.backbone.vit import build_backbone, compile_blocks, eager_blocks
from pathfm.config import load_config


def _nets():
    cfg = load_config("smoke", ["model.drop_path=0.2"])
    torch.manual_seed(0)
    student = build_backbone(cfg.model)
    teacher = build_backbone(cfg.model, drop_path=0.0).eval().requires_grad_(False)
    return student, teacher


def _step(student, teacher, global_px: int, local_px: int, batch: int) -> None:
    """One training step's forward passes as the trainer runs them: the teacher on the global crops, the
    student on global (masked) + local crops, backward, all under bf16 autocast."""
    g, loc = torch.randn(2 * batch, 3, global_px, global_px), torch.randn(4 * batch, 3, local_px, local_px)
    masks = torch.rand(2 * batch, (global_px // 14) ** 2) < 0.3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            teacher.forward_features_list([g])
        out_g, out_l = student.forward_features_list([g, loc], [masks, None])
        loss = out_g["cls"].float().sum() + out_l["cls"].float().sum()
    loss.backward()


def test_a_run_compiles_one_block_graph_for_the_student_and_one_for_the_teacher():
    """Main stage, a probe-like call and a high-resolution stage at another batch size compile 2 graphs
    (before the fix: 8, the recompile limit; 4 in the main stage alone: student / teacher x bf16 tokens
    into the first block / fp32 residual after it, then 4 more for the high-res shapes)."""
    torch._dynamo.reset()
    student, teacher = _nets()
    compile_blocks(student, backend="aot_eager")
    compile_blocks(teacher, backend="aot_eager")
    dtypes: set[torch.dtype] = set()
    hooks = [blk.register_forward_pre_hook(lambda _m, args: dtypes.update(x.dtype for x in args[0]))
             for blk in student.blocks]
    counters.clear()
    _step(student, teacher, 42, 28, 2)  # main stage
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert dtypes == {torch.float32}, "the residual stream changes dtype between blocks under autocast"
    with eager_blocks(), torch.no_grad():  # the in-training probe: eval batch, no autocast
        teacher.forward_features(torch.randn(5, 3, 42, 42))
    _step(student, teacher, 56, 42, 3)  # high-res stage: other crop sizes and batch
    _step(student, teacher, 42, 28, 1)  # and back
    for h in hooks:
        h.remove()
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert not counters["recompiles"] and counters["frames"]["total"] == counters["frames"]["ok"] == 2
