"""pathfm's training step on fixed synthetic crops, with everything a comparison needs kept.

This is the pathfm side of the step-parity check against facebookresearch/dinov2
(``benchmarks/dinov2_step_parity.py``, docs/training-health.md): the step is composed of the same public
pieces of :mod:`pathfm.ssl.step`, in the same order, as the trainer's optimizer step (schedule -> iBOT masks
-> teacher targets -> student -> losses -> backward -> per-submodule clipping + AdamW -> EMA), on crops
drawn from a seed instead of slides, so that another implementation can be fed bit-identical inputs and
``tests/test_ssl_dinov2_parity.py`` can recompute it without DINOv2's code.

The cases are small (pico ViT, crops 42/28 px, K = 64) but keep every mechanism the recipe uses: LayerScale,
register tokens, shared and separate iBOT heads, Sinkhorn-Knopp and softmax centering, KoLeo, layer-wise lr
decay, the patch-embed lr multiplier, the frozen last layer, lr / wd / momentum / teacher-temperature
schedules. Drop path is 0 (its random draws cannot be matched across implementations) and so is KDE
(Midnight's term; DINOv2 has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pathfm.config import Config, load_config, lr_scaled
from pathfm.ssl.centering import Center
from pathfm.ssl.param_groups import apply_schedule, param_groups
from pathfm.ssl.schedules import schedule_values
from pathfm.ssl import step as ssl_step
from pathfm.ssl.step import SSLNet, StudentOutputs, TeacherTargets

_COMMON = {
    "seed": 0,
    "data.batch_size": 4,
    "data.crops.global_size": 42,
    "data.crops.local_size": 28,
    "data.crops.n_local": 2,
    "model.arch": "vit_pico",
    "model.patch_size": 14,
    "model.drop_path": 0.0,
    "dino_head": {"n_prototypes": 64, "hidden_dim": 48, "bottleneck_dim": 16, "n_layers": 3},
    "ibot_head": {"n_prototypes": 48, "hidden_dim": 40, "bottleneck_dim": 16, "n_layers": 3},
    "loss.kde_weight": 0.0,
    "loss.koleo_weight": 0.1,
    "loss.mask_probability": 1.0,  # every global crop masked: the iBOT path is always exercised
    "optim.steps": 40,
    "optim.base_lr": 4e-3,
    "optim.lr_scaling": "none",
    "optim.warmup_steps": 4,
    "optim.min_lr": 1e-5,
    "optim.freeze_last_layer_steps": 2,
    "optim.teacher_temp_warmup_steps": 10,
    "optim.momentum_teacher": 0.95,  # faster than DINOv2's 0.992 so that 40 steps move the teacher
    "optim.clip_grad": 3.0,
    "run.precision": "fp32",
}

PARITY_CASES: dict[str, dict[str, Any]] = {
    # Midnight's choices: Sinkhorn-Knopp, a separate iBOT head, LayerScale 1e-5, no registers
    "midnight": {
        **_COMMON,
        "model.layerscale": 1e-5,
        "model.n_registers": 0,
        "loss.centering": "sinkhorn_knopp",
        "loss.separate_ibot_head": True,
    },
    # DINOv2's default config: softmax centering, one head for DINO and iBOT; 4 registers (the _reg4
    # models); LayerScale 1.0 so that every block changes the output and its gradients are not tiny
    "dinov2_default": {
        **_COMMON,
        "model.layerscale": 1.0,
        "model.n_registers": 4,
        "loss.centering": "softmax",
        "loss.separate_ibot_head": False,
    },
}


def parity_config(case: str) -> Config:
    if case not in PARITY_CASES:
        raise ValueError(f"unknown parity case {case!r}; choose one of {', '.join(PARITY_CASES)}")
    return load_config("smoke", dict(PARITY_CASES[case]))


def fixed_crops(cfg: Config, seed: int) -> tuple[Tensor, Tensor]:
    """Global crops (n_g*B, 3, G, G) and local crops (n_l*B, 3, L, L), crop-major, standard normal."""
    g = torch.Generator().manual_seed(seed)
    c, b = cfg.data.crops, cfg.data.batch_size
    global_crops = torch.randn((c.n_global * b, 3, c.global_size, c.global_size), generator=g)
    local_crops = torch.randn((c.n_local * b, 3, c.local_size, c.local_size), generator=g)
    return global_crops, local_crops


@dataclass
class StepRecord:
    """Everything one optimizer step produced (tensors detached, on CPU)."""

    sched: dict[str, float]
    masks: Tensor
    mask_weights: Tensor
    targets: TeacherTargets
    outputs: StudentOutputs
    losses: dict[str, float]
    grads: dict[str, Tensor]  # pre-clip gradient of every student parameter that has one
    grad_norms: dict[str, float]  # pre-clip norm per clipped submodule


@dataclass
class PathfmStepper:
    """Student, teacher, optimizer and centers of one run, stepped on given crops."""

    cfg: Config
    student: SSLNet
    teacher: SSLNet
    optimizer: torch.optim.Optimizer
    centers: dict[str, Center] | None
    step: int = 0
    base_lr: float = field(init=False)

    def __post_init__(self) -> None:
        self.base_lr = lr_scaled(self.cfg, 1)

    @classmethod
    def build(cls, cfg: Config) -> "PathfmStepper":
        """As the trainer builds a run: seeded init, teacher = copy of the student, fused param groups, AdamW."""
        torch.manual_seed(cfg.seed)
        student, teacher = ssl_step.build_student_teacher(cfg)
        groups = param_groups(list(student.named_parameters()), student.backbone.depth, cfg.optim)
        optimizer = torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.optim.betas))
        centers = None
        if cfg.loss.centering == "softmax":
            k_ibot = cfg.ibot_head.n_prototypes if cfg.loss.separate_ibot_head else cfg.dino_head.n_prototypes
            m = cfg.loss.center_momentum
            centers = {"dino": Center(cfg.dino_head.n_prototypes, m), "ibot": Center(k_ibot, m)}
        return cls(cfg, student, teacher, optimizer, centers)

    def masks(self) -> tuple[Tensor, Tensor]:
        """This step's iBOT masks and per-crop weights, drawn as the trainer draws them (one process)."""
        b = self.cfg.data.batch_size
        grid = self.cfg.data.crops.global_size // self.cfg.model.patch_size
        return ssl_step.make_ibot_masks(
            self.cfg.loss, seed_key=[self.cfg.seed, 0, self.step, 0], n_global=self.cfg.data.crops.n_global,
            images_global=b, rank_images=slice(0, b), grid=grid,
        )  # fmt: skip

    def run_step(self, global_crops: Tensor, local_crops: Tensor) -> StepRecord:
        cfg = self.cfg
        sched = schedule_values(cfg, self.step, self.base_lr)
        apply_schedule(self.optimizer, sched)
        masks, mask_w = self.masks()
        targets = ssl_step.teacher_targets(self.teacher, global_crops, masks, sched["teacher_temp"], cfg.loss, self.centers, None)
        out = self.student(global_crops, local_crops, masks)
        parts = ssl_step.ssl_losses(out, targets, masks, mask_w, cfg.loss, cfg.data.crops.n_global)
        sum(parts.values()).backward()
        grads = {n: p.grad.detach().clone() for n, p in self.student.named_parameters() if p.grad is not None}
        norms = ssl_step.clip_and_step(self.student, self.optimizer, None, cfg.optim.clip_grad, self.step + 1)
        ssl_step.ema_update(self.teacher, self.student, sched["momentum"])
        self.step += 1
        detached_out = StudentOutputs(**{k: v.detach() for k, v in vars(out).items()})
        return StepRecord(
            sched=sched, masks=masks, mask_weights=mask_w, targets=targets, outputs=detached_out,
            losses={k: float(v.detach()) for k, v in parts.items()}, grads=grads, grad_norms=norms,
        )  # fmt: skip


def target_entropy(probs: Tensor) -> float:
    """Mean entropy (nats) of the rows of a probability matrix."""
    p = probs.double()
    return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())


def update_norms(net: SSLNet, initial: dict[str, Tensor]) -> dict[str, float]:
    """L2 norm of each parameter's change since ``initial`` (float64): sensitive to every lr / wd multiplier."""
    return {n: float((p.detach().double() - initial[n].double()).norm()) for n, p in net.named_parameters()}


def trace(case: str, n_steps: int, input_seed: int = 1, nudge_inputs: bool = False) -> dict[str, Any]:
    """Per-step losses, grad norms and teacher target entropies of ``n_steps`` steps on fixed crops, and how far
    each student and teacher parameter moved: the numbers the stored parity fixture holds.

    ``nudge_inputs`` moves every crop value one float32 ulp up (``nextafter``): the trace of that run differs
    from the plain one only by rounding, amplified over the steps, which measures the float32 noise floor a
    comparison of traces from different machines must tolerate.
    """
    cfg = parity_config(case)
    stepper = PathfmStepper.build(cfg)
    initial = {n: p.detach().clone() for n, p in stepper.student.named_parameters()}
    crops = fixed_crops(cfg, input_seed)
    if nudge_inputs:
        crops = tuple(torch.nextafter(c, torch.full_like(c, float("inf"))) for c in crops)
    steps = []
    for _ in range(n_steps):
        rec = stepper.run_step(*crops)
        steps.append({
            "losses": rec.losses,
            "grad_norms": rec.grad_norms,
            "dino_target_entropy": target_entropy(rec.targets.dino),
            "ibot_target_entropy": target_entropy(rec.targets.ibot),
        })  # fmt: skip
    return {
        "case": case,
        "input_seed": input_seed,
        "steps": steps,
        "student_update_norms": update_norms(stepper.student, initial),
        "teacher_update_norms": update_norms(stepper.teacher, initial),
    }


TRACE_FAMILIES = ("loss", "grad_norm", "target_entropy", "student_update", "teacher_update")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def trace_deviations(got: dict[str, Any], reference: dict[str, Any]) -> dict[str, list[float]]:
    """Largest relative deviation of ``got`` from ``reference`` per family: per step for the step-wise
    families (loss parts, grad norms, target entropies), one value for each parameter-update family."""
    if len(got["steps"]) != len(reference["steps"]):
        raise ValueError(f"traces of {len(got['steps'])} and {len(reference['steps'])} steps")
    out: dict[str, list[float]] = {"loss": [], "grad_norm": [], "target_entropy": []}
    for g, r in zip(got["steps"], reference["steps"]):
        out["loss"].append(max(_rel(g["losses"][k], r["losses"][k]) for k in r["losses"]))
        out["grad_norm"].append(max(_rel(g["grad_norms"][k], r["grad_norms"][k]) for k in r["grad_norms"]))
        out["target_entropy"].append(max(_rel(g[k], r[k]) for k in ("dino_target_entropy", "ibot_target_entropy")))
    for fam in ("student_update", "teacher_update"):
        ref, new = reference[f"{fam}_norms"], got[f"{fam}_norms"]
        if set(ref) != set(new):
            raise ValueError(f"{fam}: parameter names differ: {sorted(set(ref) ^ set(new))[:5]}")
        out[fam] = [max(_rel(new[k], ref[k]) for k in ref)]
    return out


def running_max(values: list[float]) -> list[float]:
    out, m = [], 0.0
    for v in values:
        m = max(m, v)
        out.append(m)
    return out
