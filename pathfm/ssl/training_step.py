"""One optimizer step of the DINOv2 / Midnight recipe, composed in one place:

    schedule -> iBOT masks -> teacher targets -> student -> losses -> backward (per micro-batch)
             -> clip + AdamW -> EMA teacher

The trainer (:mod:`pathfm.ssl.trainer`) calls :func:`training_step` for every step it trains, and the DINOv2
parity trace (benchmarks/step_trace.py, tests/test_ssl_dinov2_parity.py) calls the same function, so the
step checked against facebookresearch/dinov2's is the step that trains. The pieces are in
:mod:`pathfm.ssl.step` (models, masks, teacher, losses, clipping, EMA) and :mod:`pathfm.ssl.schedules`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from pathfm.ssl import sharding
from pathfm.ssl.diagnostics import dino_ce_per_pair, step_diagnostics
from pathfm.ssl.param_groups import apply_schedule
from pathfm.ssl.runtime import autocast_for
from pathfm.ssl.schedules import schedule_values
from pathfm.ssl.step import (
    SSLNet,
    StudentOutputs,
    TeacherTargets,
    clip_and_step,
    ema_update,
    make_ibot_masks,
    masked_rows,
    ssl_losses,
    teacher_targets,
    to_device,
)


@dataclass
class StepModels:
    """What a step updates: student and EMA teacher, the optimizer, the centers of softmax centering, and
    how the student is called (``student_fwd``: the DDP wrapper when there is one), the loss scaler (fp16)
    and the FSDP units whose gradient sync is switched off between micro-batches."""

    student: SSLNet
    teacher: SSLNet
    optimizer: torch.optim.Optimizer
    centers: dict | None = None
    student_fwd: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    shard_units: list = field(default_factory=list)


@dataclass
class StepPosition:
    """Where the step is: stage and step within it (schedules, mask seeds), the global step (messages), and
    this process's place among ``world_size`` ranks (each draws its own images' masks)."""

    stage_index: int
    stage_step: int
    global_step: int
    rank: int = 0
    world_size: int = 1


@dataclass
class StepTrace:
    """The last micro-batch of a step, kept for the parity trace: masks, teacher targets, student outputs
    (detached) and the gradients before clipping."""

    masks: Tensor
    mask_weights: Tensor
    targets: TeacherTargets
    outputs: StudentOutputs
    grads: dict[str, Tensor]


@dataclass
class StepResult:
    sched: dict[str, float]
    values: dict[str, float]  # loss parts (and diag/* when diagnosed), averaged over the micro-batches
    grad_norms: dict[str, float]  # pre-clip norm per student submodule
    trace: StepTrace | None = None


def training_step(
    models: StepModels,
    cfg: Any,
    base_lr: float,
    position: StepPosition,
    crops: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | None = None,
    precision: str = "fp32",
    all_reduce: Callable | None = None,
    diagnose: bool = False,
    check_finite: Callable[[dict[str, float]], None] | None = None,
    keep: bool = False,
) -> StepResult:
    """One optimizer step over ``cfg.optim.grad_accum`` micro-batches of ``(global_crops, local_crops)``
    (crop-major, on ``device``). ``all_reduce``: sums across ranks for centering / Sinkhorn-Knopp;
    ``diagnose``: also the ``diag/*`` training-health signals (pathfm.ssl.diagnostics); ``check_finite``:
    called with each micro-batch's loss values before its backward; ``keep``: return a :class:`StepTrace`."""
    student_fwd = models.student_fwd or models.student
    device = device or torch.device("cpu")
    sched = schedule_values(cfg, position.stage_step, base_lr)
    apply_schedule(models.optimizer, sched)
    accum = cfg.optim.grad_accum
    n_g = cfg.data.crops.n_global
    sums: dict[str, float] = {}
    last: dict[str, Any] = {}
    for micro, (global_crops, local_crops) in enumerate(crops):
        b = global_crops.shape[0] // n_g
        masks, mask_w = make_ibot_masks(
            cfg.loss,
            seed_key=[cfg.seed, position.stage_index, position.stage_step, micro],
            n_global=n_g,
            images_global=b * position.world_size,
            rank_images=slice(position.rank * b, (position.rank + 1) * b),
            grid=global_crops.shape[-1] // cfg.model.patch_size,
        )
        where = masked_rows(masks, mask_w, device)  # on the host: no device sync to find the masked patches
        masks = to_device(masks, device)
        sync = micro == accum - 1
        with autocast_for(device, precision):
            targets = teacher_targets(models.teacher, global_crops, masks, sched["teacher_temp"], cfg.loss,
                                      models.centers, all_reduce, where.rows)
        ddp = isinstance(student_fwd, nn.parallel.DistributedDataParallel)
        no_sync = student_fwd.no_sync() if (ddp and not sync) else contextlib.nullcontext()
        sharding.set_gradient_sync(models.shard_units, sync)
        with no_sync:  # the forward under autocast; the backward outside it (PyTorch's recommendation)
            with autocast_for(device, precision):
                out = student_fwd(global_crops, local_crops, masks, where.rows)
                parts = ssl_losses(out, targets, masks, mask_w, cfg.loss, n_g, where.weights)
                diag = step_diagnostics(
                    teacher_dino_logits=targets.dino_logits, teacher_dino_targets=targets.dino,
                    teacher_ibot_targets=targets.ibot, teacher_cls=targets.cls[:b],
                    teacher_gain=sharding.full_value(models.teacher.dino_head.gain),
                    student_dino_global=out.dino_global, student_temp=cfg.loss.student_temp,
                    student_backbone=models.student.backbone,
                ) if diagnose else {}  # fmt: skip  (only on the steps that are logged)
            # one device->host sync for all loss parts and diagnostics (not one per value)
            named = {**parts, **diag}
            values = dict(zip(named, torch.stack([v.detach().float() for v in named.values()]).tolist()))
            if check_finite is not None:
                check_finite({k: values[k] for k in parts})
            loss = sum(parts.values()) / accum
            (models.scaler.scale(loss) if models.scaler is not None else loss).backward()
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v / accum
        if keep:
            last = {"masks": masks, "mask_weights": mask_w, "targets": targets,
                    "outputs": StudentOutputs(**{k: v.detach() for k, v in vars(out).items()})}
    if diagnose:  # linear in the loss parts, so the mean of the micro-batches' values is the step's
        sums["diag/dino_ce_per_pair"] = dino_ce_per_pair(sums, cfg.loss.dino_weight)
    trace = None
    if keep:
        grads = {n: p.grad.detach().clone() for n, p in models.student.named_parameters() if p.grad is not None}
        trace = StepTrace(grads=grads, **last)
    norms = clip_and_step(models.student, models.optimizer, models.scaler, cfg.optim.clip_grad,
                          position.global_step + 1)
    ema_update(models.teacher, models.student, sched["momentum"])
    return StepResult(sched, sums, norms, trace)
