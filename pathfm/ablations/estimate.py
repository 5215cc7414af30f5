"""Cost estimate of a study plan: accelerator-hours per trial and in total (the formula is
:mod:`pathfm.sweeps.cost`'s, shared with the sweep pre-flight; this module supplies the step times).

Per arm: hours = workers x (main steps x t(arch@global) + high-res steps x t(arch@highres global)
+ trial_overhead_s) / 3600,
where t is the scale's ``step_time_s`` table (seconds of one accelerator per optimizer step, measured) or,
for a missing entry, a FLOP model of the DINOv2 step:

    F(S)  = depth x (24 N D^2 + 4 N^2 D) + 2 N D 3 P^2    (forward FLOPs of one S-px crop, N = (S/P)^2 + 1)
    step  = B x accum x [3 (2 F(G) + n_local F(L)) + 2 F(G)]   (student fwd+bwd on all crops, teacher fwd on globals)
    t     = step / (peak_tflops x 1e12 x mfu)

(Kaplan et al. 2020's 6ND rule per token, attention term included; projection heads ignored, so the
model is a lower bound on compute and the default MFU of 0.3 is deliberately modest.)
"""

from __future__ import annotations

from dataclasses import dataclass

from pathfm.ablations.expand import StudyPlan
from pathfm.ablations.scales import Scale, get_scale
from pathfm.config import Config
from pathfm.sweeps.cost import concurrent_trials, sweep_hours, trial_hours


@dataclass
class ArmCost:
    arm: str
    main_steps: int
    highres_steps: int
    s_per_step_main: float
    s_per_step_highres: float | None
    source: str  # "measured" | "flop model"
    hours_per_trial: float  # accelerator-hours (GPU-hours; CPU-hours at a CPU scale)


def _arch_dims(arch: str) -> tuple[int, int]:
    from pathfm.backbone.vit import ARCH_SPECS

    spec = ARCH_SPECS[arch]
    return spec.embed_dim, spec.depth


def vit_forward_flops(arch: str, size: int, patch: int, n_registers: int = 0) -> float:
    """Forward FLOPs of one crop of ``size`` px through the backbone (see module docstring)."""
    d, depth = _arch_dims(arch)
    n = (size // patch) ** 2 + 1 + n_registers
    return depth * (24 * n * d * d + 4 * n * n * d) + 2 * n * d * 3 * patch * patch


def flops_per_step(cfg: Config) -> float:
    """FLOPs of one optimizer step of one worker at the config's crops and batch."""
    c, m = cfg.data.crops, cfg.model
    fg = vit_forward_flops(m.arch, c.global_size, m.patch_size, m.n_registers)
    fl = vit_forward_flops(m.arch, c.local_size, m.patch_size, m.n_registers)
    per_image = 3 * (c.n_global * fg + c.n_local * fl) + c.n_global * fg
    return cfg.data.batch_size * cfg.optim.grad_accum * per_image


def step_time(cfg: Config, scale: Scale) -> tuple[float, str]:
    key = f"{cfg.model.arch}@{cfg.data.crops.global_size}"
    if key in scale.step_time_s:
        return scale.step_time_s[key], "measured"
    return flops_per_step(cfg) / (scale.peak_tflops * 1e12 * scale.mfu), "flop model"


def arm_cost(cfg: Config, scale: Scale, arm: str, workers: int = 1) -> ArmCost:
    t_main, src = step_time(cfg, scale)
    hr_steps, t_hr = 0, None
    if cfg.highres.enabled:
        hr_cfg = cfg.highres_stage()
        hr_steps = hr_cfg.optim.steps
        t_hr, src_hr = step_time(hr_cfg, scale)
        if src_hr != src:
            src = "measured + flop model"
    hours = trial_hours([(cfg.optim.steps, t_main), (hr_steps, t_hr or 0.0)], overhead_s=scale.trial_overhead_s,
                        devices=workers)
    return ArmCost(arm, cfg.optim.steps, hr_steps, t_main, t_hr, src, hours)


def plan_costs(plan: StudyPlan) -> list[ArmCost]:
    scale = get_scale(plan.scale)
    workers = int(plan.resources.get("workers", 1) or 1)
    return [arm_cost(plan.arm_config(a.name), scale, a.name, workers) for a in plan.arms]


def total_hours(plan: StudyPlan, costs: list[ArmCost] | None = None) -> float:
    """Sum over the sweep's trials (:meth:`StudyPlan.sweep_trials`) of their arm's hours; a trial of an
    adaptive search, whose arm is chosen while it runs, costs the mean over arms."""
    costs = costs if costs is not None else plan_costs(plan)
    return sweep_hours(plan.sweep_trials(), {c.arm: c.hours_per_trial for c in costs})


def concurrency(plan: StudyPlan, cpus: int | None = None) -> int | None:
    """Trials at once (:func:`pathfm.sweeps.cost.concurrent_trials`): the plan's cap, or for a CPU scale what
    this machine's CPUs hold; None on GPU scales without a cap (it depends on the cluster)."""
    import os

    spec = plan.spec
    totals = None if spec.resources.gpu > 0 else {"CPU": float(cpus or os.cpu_count() or 1)}
    return concurrent_trials(spec.resources, spec.max_concurrent_trials, totals, n_trials=plan.n_trials)


def wall_hours(plan: StudyPlan, costs: list[ArmCost] | None = None, cpus: int | None = None) -> float | None:
    """Wall-clock estimate where the concurrency is known (CPU scales); None otherwise."""
    n = concurrency(plan, cpus)
    if n is None:
        return None
    workers = int(plan.resources.get("workers", 1) or 1)
    return total_hours(plan, costs) / workers / n
