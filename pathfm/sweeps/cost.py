"""Accelerator-hours of trials and sweeps, and how many trials run at once: the one estimator behind ``pathfm sweep run --dry-run`` (a measured
CPU step, or ``--step-time``) and ``pathfm ablate run --dry-run`` (a scale's measured step times or the FLOP
model of :mod:`pathfm.ablations.estimate`); only where the seconds per step come from differs.

    trial hours = devices x (sum over stages of steps x seconds per step + overhead) / 3600
    sweep hours = sum over the trials (``expand_trials``) of their arm's trial hours
    trials at once = min(cap, what fits in the cluster's CPUs or GPUs)      (:func:`concurrent_trials`)

``pathfm sweep run`` sizes its Tuner with :func:`concurrent_trials` from the cluster's totals; ``pathfm ablate
run --dry-run`` uses it for a wall-clock estimate from this machine's CPUs.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence


def trial_hours(stages: Sequence[tuple[int, float]], *, overhead_s: float = 0.0, devices: float = 1.0) -> float:
    """Device-hours of one trial: ``stages`` are ``(steps, seconds per step)`` (main, high-res), each step
    taken by all ``devices`` (GPUs x workers of a trial) at once; ``overhead_s``: start-up and evaluation."""
    seconds = sum(steps * s_per_step for steps, s_per_step in stages) + overhead_s
    return devices * seconds / 3600.0


def sweep_hours(trials: Iterable[dict], hours_by_arm: dict[str | None, float]) -> float:
    """Sum over ``trials`` of their arm's hours; a trial whose arm has no entry (an adaptive search's, whose arm
    is chosen while it runs, or every trial when one cost stands for all) costs the mean over arms."""
    mean = sum(hours_by_arm.values()) / len(hours_by_arm)
    return sum(hours_by_arm.get(t.get("arm"), mean) for t in trials)


def concurrent_trials(resources: Any, cap: int | None, totals: Mapping[str, float] | None, *,
                      n_trials: int | None = None) -> int | None:
    """Trials that run at once: how many fit in ``totals`` (``{"CPU": .., "GPU": ..}`` of the cluster; a trial
    holds ``resources.cpu`` or ``resources.gpu`` per worker, ``resources.workers`` workers), at least 1, capped
    by ``cap`` (a spec's ``max_concurrent_trials``) and by ``n_trials``. ``totals=None`` (the cluster is not
    known yet): the cap, or None without one."""
    if totals is None:
        return cap
    if resources.gpu > 0:
        fit = math.floor(totals.get("GPU", 0) / (resources.gpu * resources.workers))
    else:
        fit = math.floor(totals.get("CPU", 0) / (resources.cpu * resources.workers))
    fit = max(1, fit)
    if cap:
        fit = min(fit, cap)
    return min(fit, n_trials) if n_trials else fit
