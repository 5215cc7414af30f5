"""Checkpoint averaging: the mean of the EMA teacher's weights over the last K checkpoints of a run.

A late average of weights (Polyak averaging over time, a "model soup" of one run) is often at least as good
as the final checkpoint and smooths out where the run happened to stop. ``pathfm export RUN --average-last K``
averages the teacher backbones of the newest K checkpoints of one stage (``main`` or ``highres``; the
stages' checkpoints never mix) and writes an exported backbone (:mod:`pathfm.backbone.backbone_file` format, plus
``averaged_steps``) that ``pathfm eval`` reads like ``teacher_backbone.pt``. Floating-point tensors are
averaged in float64 and cast back to their dtype; any other tensor must be equal in every checkpoint.
K checkpoints exist only if ``run.keep_checkpoints >= K`` during training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pathfm.backbone import checkpoint as ckpt
from pathfm.backbone.backbone_file import export_backbone
from pathfm.backbone.vit import build_backbone
from pathfm.errors import PathfmError
from pathfm.records import RunFolder


def average_state_dicts(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (pure)."""
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict")
    keys = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise PathfmError(f"state dict {i} has different keys than state dict 0: {diff[:5]}")
    out: dict[str, Tensor] = {}
    for k in keys:
        ts = [s[k] for s in states]
        if any(t.shape != ts[0].shape for t in ts):
            raise PathfmError(f"'{k}' has different shapes across checkpoints: {[tuple(t.shape) for t in ts]}")
        if ts[0].is_floating_point():
            out[k] = torch.stack([t.double() for t in ts]).mean(0).to(ts[0].dtype)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts):
                raise PathfmError(f"'{k}' ({ts[0].dtype}) differs across checkpoints and cannot be averaged")
            out[k] = ts[0].clone()
    return out


def last_checkpoints(run_dir: str | Path, k: int, stage: str | None = None) -> list[tuple[int, dict]]:
    """``(step, checkpoint)`` of the newest ``k`` valid checkpoints of ``stage`` (default: the newest
    checkpoint's stage), oldest first. A clear error when fewer exist."""
    if k < 1:
        raise PathfmError(f"--average-last must be >= 1, got {k}")
    found = []
    for step, path in reversed(ckpt.list_checkpoints(run_dir)):
        state = ckpt.load_checkpoint(path)  # a corrupt one is an error here: an average must not skip silently
        if "sharded_dir" in state:  # a sharded (fsdp) run's checkpoint: its teacher is in the shards
            from pathfm.backbone.sharded_checkpoint import read_full_teacher

            state["teacher"] = read_full_teacher(path)
        stage = stage or state["stage"]
        if state["stage"] == stage:
            found.append((step, state))
        if len(found) == k:
            break
    if len(found) < k:
        raise PathfmError(
            f"{run_dir}: {len(found)} checkpoint(s) of stage '{stage}' found, {k} asked for; train with "
            f"run.keep_checkpoints>={k} (and run.checkpoint_every small enough) or average fewer")
    return found[::-1]


def export_average(run_dir: str | Path, k: int, out: str | Path | None = None, stage: str | None = None) -> Path:
    """Average the teacher backbones of the last ``k`` checkpoints and export them; returns the file
    (default ``run_dir/teacher_backbone_avg<k>.pt``)."""
    chosen = last_checkpoints(run_dir, k, stage)
    averaged = average_state_dicts([state["teacher"]["backbone"] for _, state in chosen])
    last_step, last = chosen[-1]
    model = build_backbone(last["model"], drop_path=0.0)
    model.load_state_dict(averaged, strict=True)
    out = Path(out) if out is not None else RunFolder(run_dir).averaged_backbone(k, last["stage"])
    return export_backbone(model, out, step=last_step, config_sha=last.get("config_sha", ""), model_cfg=last["model"],
                           extra={"averaged_steps": [s for s, _ in chosen], "stage": last["stage"]})
