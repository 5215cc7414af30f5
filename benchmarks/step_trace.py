"""pathfm's training step on fixed synthetic crops, with everything a comparison needs kept.

This is the pathfm side of the step-parity check against facebookresearch/dinov2
(``benchmarks/dinov2_step_parity.py``, docs/training-health.md): every step is
:func:`pathfm.ssl.training_step.training_step`, the function the trainer calls for each step it trains
(schedule -> iBOT masks -> teacher targets -> student -> losses -> backward -> per-submodule clipping +
AdamW -> EMA), on crops drawn from a seed instead of slides, so that another implementation can be fed bit-identical inputs and
``tests/test_ssl_dinov2_parity.py`` can recompute it without DINOv2's code.

The cases are small (pico ViT, crops 42/28 px, K = 64) but keep every mechanism the recipe uses: LayerScale,
register tokens, shared and separate iBOT heads, Sinkhorn-Knopp and softmax centering, KoLeo, layer-wise lr
decay, the patch-embed lr multiplier, the frozen last layer, lr / wd / momentum / teacher-temperature
schedules. Drop path is 0 (its random draws cannot be matched across implementations) and so is KDE
(Midnight's term; DINOv2 has none).

``noise_envelope`` measures how far float32 rounding alone moves a trace (crops one ulp away, other float
kernels and thread counts, each kernel setting in a fresh ``python benchmarks/step_trace.py CASE... --steps
N``, which prints the traces as JSON): the scale of the parity test's tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pathfm.config import Config, load_config, lr_scaled
from pathfm.ssl import step as ssl_step
from pathfm.ssl.centering import Center
from pathfm.ssl.param_groups import param_groups
from pathfm.ssl.step import SSLNet, StudentOutputs, TeacherTargets
from pathfm.ssl.training_step import StepModels, StepPosition, StepResult, training_step

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


def step_masks(cfg: Config, step: int) -> tuple[Tensor, Tensor]:
    """The iBOT masks and per-crop weights that training_step draws at ``step`` (stage 0, one process)."""
    b = cfg.data.batch_size
    return ssl_step.make_ibot_masks(
        cfg.loss, seed_key=[cfg.seed, 0, step, 0], n_global=cfg.data.crops.n_global,
        images_global=b, rank_images=slice(0, b), grid=cfg.data.crops.global_size // cfg.model.patch_size,
    )  # fmt: skip


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
        """The iBOT masks and per-crop weights the coming step will draw (training_step, one process), for
        feeding another implementation the same masks."""
        return step_masks(self.cfg, self.step)

    def step_result(self, global_crops: Tensor, local_crops: Tensor, *, diagnose: bool = False,
                    keep: bool = False) -> StepResult:
        """One step of the trainer's :func:`~pathfm.ssl.training_step.training_step` on these crops, as the
        trainer calls it (``diagnose``: with the diag/* signals of a logged step; ``keep``: with its trace)."""
        models = StepModels(self.student, self.teacher, self.optimizer, self.centers)
        r = training_step(models, self.cfg, self.base_lr, StepPosition(0, self.step, self.step),
                          [(global_crops, local_crops)], diagnose=diagnose, keep=keep)
        self.step += 1
        return r

    def run_step(self, global_crops: Tensor, local_crops: Tensor) -> StepRecord:
        """One step on these crops, with everything a comparison needs kept."""
        r = self.step_result(global_crops, local_crops, keep=True)
        t = r.trace
        return StepRecord(
            sched=r.sched, masks=t.masks, mask_weights=t.mask_weights, targets=t.targets, outputs=t.outputs,
            losses=dict(r.values), grads=t.grads, grad_norms=r.grad_norms,
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
    """Relative deviation of ``got`` from ``reference`` per quantity: per step for each loss part
    (``loss/koleo``), per-submodule grad norm (``grad_norm/backbone``) and target entropy
    (``target_entropy/dino``); one value, the largest over the parameters, for ``student_update`` and
    ``teacher_update``. Each quantity is its own family because their conditioning differs by orders of
    magnitude (KoLeo on near-duplicate embeddings against the DINO loss, say), and so do their tolerances."""
    if len(got["steps"]) != len(reference["steps"]):
        raise ValueError(f"traces of {len(got['steps'])} and {len(reference['steps'])} steps")
    out: dict[str, list[float]] = {}
    for g, r in zip(got["steps"], reference["steps"]):
        pairs = [(f"loss/{k}", g["losses"][k], v) for k, v in r["losses"].items()]
        pairs += [(f"grad_norm/{k}", g["grad_norms"][k], v) for k, v in r["grad_norms"].items()]
        pairs += [(f"target_entropy/{k}", g[f"{k}_target_entropy"], r[f"{k}_target_entropy"]) for k in ("dino", "ibot")]
        for family, new, ref in pairs:
            out.setdefault(family, []).append(_rel(new, ref))
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


# ------------------------------------------------------------------------------------ noise envelope
#: The environment variables that pick a float kernel: ATen's vectorised CPU kernels, MKL's BLAS code path
#: and oneDNN's. A subprocess trace clears them and sets its variant's.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")

#: Float-kernel variants of one machine that stand for other CPUs: ATen's AVX2 kernels (what an AMD Zen 2/3
#: runs; an AVX-512 machine otherwise uses its AVX-512 ones) and its scalar fallback, MKL's and oneDNN's AVX2
#: code paths (MKL's is the one an AMD CPU gets), and all three at once. Each variant may only lower the
#: instruction set, so on a CPU without AVX-512 some of them equal ``native``.
KERNEL_VARIANTS: dict[str, dict[str, str]] = {
    "native": {},
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "all_avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
#: each kernel variant runs with this many intra-op threads (the split of reductions changes their rounding)
VARIANT_THREADS = (1, 2)


def trace_in_subprocess(cases: list[str], n_steps: int, kernel_env: dict[str, str] | None = None,
                        threads: int | None = None, timeout: float = 600.0) -> dict[str, dict[str, Any]]:
    """:func:`trace` of each case in a fresh Python whose float kernels are picked by ``kernel_env``
    (read once, when torch loads, hence the subprocess) and ``threads`` intra-op threads (None: torch's
    default)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    env.update(kernel_env or {})
    cmd = [sys.executable, str(Path(__file__).resolve()), *cases, "--steps", str(n_steps)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} with {kernel_env} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.splitlines()[-1])  # the one JSON line (a library may print before it)


def noise_envelope(references: dict[str, dict[str, Any]], variants: dict[str, dict[str, str]] | None = None,
                   threads: tuple[int, ...] = VARIANT_THREADS) -> tuple[dict[str, dict[str, list[float]]], dict]:
    """How far float32 rounding alone carries a trace from ``references`` ({case: trace}), per case, family
    and step: the running maximum over the steps of the largest relative deviation among (a) this process's
    run on crops one float32 ulp away (``nudge_inputs``) and (b) the unchanged run under every kernel
    variant x thread count (``trace_in_subprocess``). (a) alone misses ill-conditioned quantities whose
    inputs a one-ulp change of the crops does not reach: under LayerScale 1e-5 every CLS embedding is the
    same vector up to 1e-5, so KoLeo's nearest-neighbour distances are differences of nearly equal float32
    numbers and move by 1e-3 when another CPU's kernels round that vector differently, not when the crops
    move by one ulp.

    Returns (envelope, sources): sources[case][source][family] is that source's largest deviation over the
    steps, to show which perturbation sets each envelope."""
    cases = list(references)
    n_steps = len(next(iter(references.values()))["steps"])
    runs: dict[str, dict[str, dict[str, Any]]] = {
        "ulp_nudge": {c: trace(c, n_steps, references[c]["input_seed"], nudge_inputs=True) for c in cases}}
    for name, kernel_env in (KERNEL_VARIANTS if variants is None else variants).items():
        for t in threads:
            runs[f"{name}/{t}t"] = trace_in_subprocess(cases, n_steps, kernel_env, t)
    envelope, sources = {}, {}
    for case in cases:
        devs = {src: trace_deviations(got[case], references[case]) for src, got in runs.items()}
        families = next(iter(devs.values()))
        envelope[case] = {fam: running_max([max(d[fam][i] for d in devs.values()) for i in range(len(v))])
                          for fam, v in families.items()}  # fmt: skip
        sources[case] = {src: {fam: max(v) for fam, v in d.items()} for src, d in devs.items()}
    return envelope, sources


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/step_trace.py CASE... [--steps N] [--threads T]``: the traces as JSON on stdout."""
    import argparse

    ap = argparse.ArgumentParser(description="pathfm's parity trace of each case, as JSON")
    ap.add_argument("cases", nargs="+", choices=sorted(PARITY_CASES))
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    ap.add_argument("--input-seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({c: trace(c, args.steps, args.input_seed) for c in args.cases}))


if __name__ == "__main__":
    main()
