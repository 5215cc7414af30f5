"""One ``metrics.jsonl`` record per logged step: its keys and the record of an optimizer step (the
in-training probe's ``probe/*`` scores are added to it by the trainer)."""

from __future__ import annotations

from typing import Any

from pathfm.backbone.vit import eager_blocks
from pathfm.ssl.stages import Progress
from pathfm.ssl.step import LOSS_PARTS

METRIC_KEYS = (
    "step", "stage", "loss", "loss/dino_local", "loss/dino_global", "loss/ibot", "loss/koleo", "loss/kde",
    "lr", "wd", "momentum", "teacher_temp", "images_per_s", "tiles_accepted", "tiles_rejected",
    "acceptance_rate", "peak_mem_mb", "time_s", "tiles_seen", "slides_skipped",
)  # fmt: skip
# training-health signals (pathfm.ssl.diagnostics) and per-submodule gradient norms, in every record too
DIAGNOSTIC_KEYS = (
    "diag/dino_target_entropy", "diag/dino_student_entropy", "diag/ibot_target_entropy", "diag/dino_ln_k",
    "diag/dino_ce_per_pair",
    "diag/teacher_spread_prototypes", "diag/teacher_spread_images", "diag/teacher_cls_cosine",
    "diag/teacher_cls_std", "diag/teacher_cls_rank",
    "diag/head_max_cosine", "grad_norm/backbone", "grad_norm/dino_head",
)  # fmt: skip  (+ "diag/layerscale" with LayerScale, "grad_norm/ibot_head" with a separate iBOT head)


def step_record(progress: Progress, stage: str, step_out: dict, images_per_s: float, peak_mem_mb: float) -> dict[str, Any]:
    """The record of one optimizer step: counters, losses, schedules, throughput and its diagnostics."""
    p, losses, sched = progress, step_out["losses"], step_out["sched"]
    seen = p.tiles_accepted + p.tiles_rejected
    return {
        "step": p.global_step,
        "stage": stage,
        "loss": sum(losses.values()),
        **{f"loss/{k}": losses[k] for k in LOSS_PARTS},
        "lr": float(sched["lr"]),
        "wd": float(sched["wd"]),
        "momentum": float(sched["momentum"]),
        "teacher_temp": float(sched["teacher_temp"]),
        "images_per_s": images_per_s,
        "tiles_accepted": p.tiles_accepted,
        "tiles_rejected": p.tiles_rejected,
        "acceptance_rate": p.tiles_accepted / seen if seen else float("nan"),
        "peak_mem_mb": peak_mem_mb,
        "time_s": p.time_s,
        "tiles_seen": p.tiles_seen,
        "slides_skipped": p.slides_skipped,
        **step_out["diagnostics"],
    }


def probe_scores(probe: Any, backbone: Any, probe_cfg: Any) -> dict[str, float]:
    """``probe(backbone, probe_cfg)`` (the in-training probe train() was handed) with the teacher ``backbone`` in
    eval mode (restored after) and its blocks eager (model.compile: no compile for the probe's shapes and modes)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with eager_blocks():
            return probe(backbone, probe_cfg)
    finally:
        backbone.train(was_training)
