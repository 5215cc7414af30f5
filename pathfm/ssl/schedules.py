"""Training schedules as plain functions of the optimizer step (DINOv2 ``CosineScheduler``, A.4).

``step`` is 0-based and counts optimizer steps within the current stage; every value is what the step
uses BEFORE its update. Warmup is ``linspace(warmup_start, base, warmup_steps)`` with inclusive endpoints
(step 0 is exactly ``warmup_start``, e.g. lr 0); then the cosine over the remaining n steps,
v(i) = final + (base - final)(1 + cos(pi i / n)) / 2, and ``final`` from ``total_steps`` on.
"""

from __future__ import annotations

import math

from pathfm.config import Config


def _linspace_at(start: float, end: float, n: int, i: int) -> float:
    """``numpy.linspace(start, end, n)[i]`` (inclusive endpoints)."""
    if n == 1:
        return start
    return start + (end - start) * i / (n - 1)


def warmup_cosine(
    step: int,
    total_steps: int,
    base: float,
    final: float,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> float:
    """Linear warmup ``warmup_start -> base`` over ``warmup_steps``, then cosine ``base -> final``."""
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(f"total_steps and warmup_steps must be >= 0, got {total_steps}, {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return _linspace_at(warmup_start, base, warmup_steps, step)
    n = total_steps - warmup_steps
    i = step - warmup_steps
    if i >= n:
        return final
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * i / n))


def linear_then_constant(step: int, start: float, end: float, ramp_steps: int) -> float:
    """``linspace(start, end, ramp_steps)`` (inclusive), then ``end`` (teacher temperature warmup)."""
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")
    if step >= ramp_steps:
        return end
    return _linspace_at(start, end, ramp_steps, step)


def schedule_values(cfg: Config, step: int, base_lr: float) -> dict[str, float]:
    """All scheduled values of optimizer step ``step`` (stage-local) of the stage described by ``cfg``.

    ``base_lr``: the peak lr after the scaling rule (:func:`pathfm.config.lr_scaled`). Keys: lr,
    last_layer_lr (0 while step < freeze_last_layer_steps), wd, momentum (teacher EMA), teacher_temp.
    """
    o = cfg.optim
    lr = warmup_cosine(step, o.steps, base_lr, o.min_lr, o.warmup_steps)
    return {
        "lr": lr,
        "last_layer_lr": 0.0 if step < o.freeze_last_layer_steps else lr,
        "wd": warmup_cosine(step, o.steps, o.weight_decay, o.weight_decay_end),
        "momentum": warmup_cosine(step, o.steps, o.momentum_teacher, o.momentum_teacher_end),
        "teacher_temp": linear_then_constant(step, o.teacher_temp_warmup, o.teacher_temp, o.teacher_temp_warmup_steps),
    }
