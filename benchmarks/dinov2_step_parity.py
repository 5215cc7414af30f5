"""Side by side: pathfm's training step and facebookresearch/dinov2's, on identical weights, crops and masks.

    python benchmarks/dinov2_step_parity.py --dinov2 /path/to/dinov2-checkout [--steps 40] [--write-fixture]
    python benchmarks/dinov2_step_parity.py --envelope-only      # the stored traces' noise envelope, anew

Needs a source checkout of https://github.com/facebookresearch/dinov2 (nothing is downloaded; its code is
imported from that folder, never copied into pathfm) and the two packages its training modules import,
``omegaconf`` and ``fvcore`` (install them into a scratch environment if you do not want them in yours).
Runs on the CPU: 2 min wall, 33 s of CPU time, for 40 steps of both cases on the 2-core project machine.

What runs on the DINOv2 side is DINOv2's own code: ``SSLMetaArch`` (backbone, heads, ``forward_backward``
with its teacher pass, centering, loss assembly and backward), ``get_params_groups`` (layer-wise decay,
patch-embed multiplier, no-decay rules, last-layer flag), ``build_schedulers`` / ``apply_optim_scheduler``
(lr, wd, momentum, teacher temperature, last-layer freeze) and its AdamW. Replaced, because they need a GPU
or a multi-process launch, and each with the operation it stands for:

* xformers (CUDA-only) by a stand-in module: ``BlockDiagonalMask`` as concatenation / splitting of token
  groups and ``memory_efficient_attention`` as PyTorch's SDPA within each block of the block-diagonal mask
  (each sequence attends to itself only, as in xformers; its dropout and stochastic-depth helpers are never
  called: drop path is 0);
* ``.cuda()`` on the input tensors by the identity; a one-process gloo group for its ``all_reduce`` calls;
* FSDP's ``clip_grad_norm_`` per student submodule by ``torch.nn.utils.clip_grad_norm_`` on that
  submodule's parameters, and ``update_teacher`` (which walks FSDP modules only) by its two foreach lines
  over the plain parameters;
* its data collation by the same fields built from pathfm's masks (DINOv2's formulas for the mask index
  list and the 1/m weights); DINOv2's own mask generator draws different masks from another RNG.

Both sides start from pathfm's seeded initialisation (copied into DINOv2's student and teacher; the
backbone names are DINOv2's, the heads' weight-norm tensors are mapped, and the mapping back through
``pathfm.backbone.foreign_weights`` is checked to be the identity). Compared at step 1: teacher DINO / iBOT
targets, student logits, every loss part, every parameter's optimizer group settings and pre-clip gradient,
every parameter after the AdamW step, every teacher parameter after the EMA, the softmax centers; then the
loss, target-entropy and grad-norm trajectories and the final weights over ``--steps`` steps.

``--write-fixture`` stores pathfm's trace (benchmarks/step_trace.py: trace) with the measured agreement in
tests/data/dinov2_step_parity.json, which tests/test_ssl_dinov2_parity.py recomputes in CI, and the trace's
float32 noise envelope (benchmarks/step_trace.py: noise_envelope: crops one ulp away, and the run under other
float kernels and thread counts; 1-3 min more). ``--envelope-only`` recomputes only that envelope, for the
stored traces, and needs no DINOv2 checkout: the traces stay the ones that were checked against DINOv2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pathfm.backbone import foreign_weights
from step_trace import (  # beside this script
    PARITY_CASES,
    PathfmStepper,
    fixed_crops,
    noise_envelope,
    parity_config,
    target_entropy,
    trace,
)

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "dinov2_step_parity.json"
FIXTURE_STEPS = 15


# ------------------------------------------------------------------------- xformers stand-in
class BlockDiagonalMask:
    """xformers' ``fmha.BlockDiagonalMask``: token sequences concatenated along dim 1, attention within each."""

    def __init__(self, seqlens: list[int], batch_sizes: list[int] | None = None) -> None:
        self.seqlens = list(seqlens)
        self._batch_sizes = batch_sizes

    @classmethod
    def from_seqlens(cls, seqlens):
        return cls(seqlens)

    @classmethod
    def from_tensor_list(cls, tensors):
        batch_sizes = [t.shape[0] for t in tensors]
        seqlens = [t.shape[1] for t in tensors for _ in range(t.shape[0])]
        return cls(seqlens, batch_sizes), torch.cat([t.reshape(1, -1, *t.shape[2:]) for t in tensors], dim=1)

    def split(self, x):
        out, start, i = [], 0, 0
        for b in self._batch_sizes:
            n = self.seqlens[i]
            out.append(x[:, start : start + b * n].reshape(b, n, *x.shape[2:]))
            start, i = start + b * n, i + b
        return out

    def dense(self, device) -> torch.Tensor:
        ids = torch.repeat_interleave(torch.arange(len(self.seqlens)), torch.tensor(self.seqlens)).to(device)
        return ids[:, None] == ids[None, :]


def _sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def memory_efficient_attention(q, k, v, attn_bias=None):
    """(B, T, H, hd) in, (B, T, H, hd) out; softmax scale 1/sqrt(hd) as in xformers. Under a block-diagonal
    mask of known groups (DINOv2's nested blocks: b sequences of n tokens per crop size) attention runs within
    each sequence only, as xformers computes it, not over the concatenation under a dense mask (T^2 work)."""
    groups = getattr(attn_bias, "_batch_sizes", None)
    if attn_bias is None or groups is None or q.shape[0] != 1:
        return _sdpa(q, k, v, attn_bias.dense(q.device) if attn_bias is not None else None)
    outs, start, i = [], 0, 0
    for b in groups:
        n = attn_bias.seqlens[i]
        part = [t[:, start : start + b * n].reshape(b, n, *t.shape[2:]) for t in (q, k, v)]
        outs.append(_sdpa(*part).reshape(1, b * n, *q.shape[2:]))
        start, i = start + b * n, i + b
    return torch.cat(outs, dim=1)


def _not_used(*_a, **_k):
    raise NotImplementedError("only reached with stochastic depth, which the parity check switches off")


def install_xformers_stand_in() -> None:
    xf, ops, fmha = (types.ModuleType(n) for n in ("xformers", "xformers.ops", "xformers.ops.fmha"))
    fmha.BlockDiagonalMask = BlockDiagonalMask
    ops.fmha, ops.memory_efficient_attention, ops.unbind = fmha, memory_efficient_attention, torch.unbind
    ops.scaled_index_add = ops.index_select_cat = _not_used
    xf.ops = ops
    sys.modules.update({"xformers": xf, "xformers.ops": ops, "xformers.ops.fmha": fmha})
    os.environ.pop("XFORMERS_DISABLED", None)  # DINOv2's layers read it at import


def import_dinov2(checkout: Path) -> types.SimpleNamespace:
    if not (checkout / "dinov2" / "train" / "ssl_meta_arch.py").is_file():
        sys.exit(f"{checkout} is not a facebookresearch/dinov2 checkout (no dinov2/train/ssl_meta_arch.py)")
    install_xformers_stand_in()
    sys.path.insert(0, str(checkout))
    try:
        from omegaconf import OmegaConf
        from dinov2.layers import MemEffAttention, NestedTensorBlock
        from dinov2.models import vision_transformer as vits
        from dinov2.train.ssl_meta_arch import SSLMetaArch
        from dinov2.train.train import apply_optim_scheduler, build_optimizer, build_schedulers
    except ImportError as e:
        sys.exit(f"importing DINOv2's training code failed ({e}); it needs omegaconf and fvcore: pip install them")
    from functools import partial

    def vit_pico(patch_size=16, num_register_tokens=0, **kw):  # pathfm's pico size, built as vit_small is
        return vits.DinoVisionTransformer(
            patch_size=patch_size, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4,
            block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), num_register_tokens=num_register_tokens, **kw,
        )  # fmt: skip

    vits.vit_pico = vit_pico
    default_cfg = OmegaConf.load(checkout / "dinov2" / "configs" / "ssl_default_config.yaml")
    return types.SimpleNamespace(
        OmegaConf=OmegaConf, SSLMetaArch=SSLMetaArch, apply_optim_scheduler=apply_optim_scheduler,
        build_optimizer=build_optimizer, build_schedulers=build_schedulers, default_cfg=default_cfg,
    )  # fmt: skip


def dinov2_cfg(d2, cfg) -> Any:
    """DINOv2's default config with the parity case's values (one 'epoch' = one step)."""
    o, L = cfg.optim, cfg.loss
    ours = {
        "compute_precision": {"grad_scaler": False},
        "dino": {"loss_weight": L.dino_weight, "head_n_prototypes": cfg.dino_head.n_prototypes,
                 "head_bottleneck_dim": cfg.dino_head.bottleneck_dim, "head_nlayers": cfg.dino_head.n_layers,
                 "head_hidden_dim": cfg.dino_head.hidden_dim, "koleo_loss_weight": L.koleo_weight},
        "ibot": {"loss_weight": L.ibot_weight, "mask_sample_probability": L.mask_probability,
                 "mask_ratio_min_max": list(L.mask_ratio), "separate_head": L.separate_ibot_head,
                 "head_n_prototypes": cfg.ibot_head.n_prototypes, "head_bottleneck_dim": cfg.ibot_head.bottleneck_dim,
                 "head_nlayers": cfg.ibot_head.n_layers, "head_hidden_dim": cfg.ibot_head.hidden_dim},
        "train": {"batch_size_per_gpu": cfg.data.batch_size, "OFFICIAL_EPOCH_LENGTH": 1,
                  "centering": "centering" if L.centering == "softmax" else "sinkhorn_knopp"},
        "student": {"arch": cfg.model.arch, "patch_size": cfg.model.patch_size, "drop_path_rate": 0.0,
                    "layerscale": cfg.model.layerscale, "ffn_layer": cfg.model.ffn, "block_chunks": 0,
                    "num_register_tokens": cfg.model.n_registers, "interpolate_antialias": False, "interpolate_offset": 0.1},
        "teacher": {"momentum_teacher": o.momentum_teacher, "final_momentum_teacher": o.momentum_teacher_end,
                    "warmup_teacher_temp": o.teacher_temp_warmup, "teacher_temp": o.teacher_temp,
                    "warmup_teacher_temp_epochs": o.teacher_temp_warmup_steps},
        "optim": {"epochs": o.steps, "weight_decay": o.weight_decay, "weight_decay_end": o.weight_decay_end,
                  "lr": o.base_lr, "warmup_epochs": o.warmup_steps, "min_lr": o.min_lr, "clip_grad": o.clip_grad,
                  "freeze_last_layer_epochs": o.freeze_last_layer_steps, "patch_embed_lr_mult": o.patch_embed_lr_mult,
                  "layerwise_decay": o.layerwise_decay, "adamw_beta1": o.betas[0], "adamw_beta2": o.betas[1]},
        # the model's positional embeddings are built for the global crop size: 224 = pathfm's fixed grid
        "crops": {"local_crops_number": cfg.data.crops.n_local, "global_crops_size": 224,
                  "local_crops_size": cfg.data.crops.local_size},
    }  # fmt: skip
    return d2.OmegaConf.merge(d2.default_cfg, d2.OmegaConf.create(ours))


# ------------------------------------------------------------------------------- weight names
def to_dinov2_name(name: str) -> str:
    """pathfm student parameter name -> DINOv2 ``SSLMetaArch.student`` name (heads' weight norm differs)."""
    return name.replace("last_layer.parametrizations.weight.original0", "last_layer.weight_g").replace(
        "last_layer.parametrizations.weight.original1", "last_layer.weight_v"
    )


def copy_weights_into_dinov2(stepper: PathfmStepper, model) -> None:
    src = {to_dinov2_name(n): p.detach() for n, p in stepper.student.named_parameters()}
    for net in (model.student, model.teacher):
        own = dict(net.named_parameters())
        if set(own) != set(src):
            raise SystemExit(f"parameter names differ: only pathfm {sorted(set(src) - set(own))[:5]}, "
                             f"only DINOv2 {sorted(set(own) - set(src))[:5]}")  # fmt: skip
        with torch.no_grad():
            for n, p in own.items():
                if p.shape != src[n].shape:
                    raise SystemExit(f"{n}: pathfm {tuple(src[n].shape)} vs DINOv2 {tuple(p.shape)}")
                p.copy_(src[n])
    # the backbone mapping of pathfm.backbone.foreign_weights, applied to DINOv2's training-checkpoint layout
    ckpt = {"model": {f"teacher.backbone.{k}": v for k, v in model.teacher.backbone.state_dict().items()}}
    converted = foreign_weights.convert_state_dict(ckpt, Path("dinov2-parity"))
    theirs, ours = converted.state, stepper.student.backbone.state_dict()
    bad = [k for k in ours if k not in theirs or not torch.equal(theirs[k].reshape(ours[k].shape), ours[k])]
    if bad or set(theirs) - set(ours) or converted.layout != "dinov2":
        raise SystemExit(f"foreign_weights does not map DINOv2's names back to pathfm's: {bad[:5]}")


# ----------------------------------------------------------------------------------- one DINOv2 step
@contextlib.contextmanager
def cuda_calls_as_identity():
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


class DinoV2Side:
    """DINOv2's model, schedules and optimizer for ``cfg``; ``observe`` records head outputs and targets for
    the comparison (off for timing: then a step is DINOv2's training step and nothing else)."""

    def __init__(self, d2, cfg, observe: bool = True) -> None:
        self.cfg = dinov2_cfg(d2, cfg)
        self.d2 = d2
        self.model = d2.SSLMetaArch(self.cfg)
        self.model.need_to_synchronize_fsdp_streams = False  # torch.cuda.synchronize, FSDP streams
        self.model.train()
        self.optimizer = None
        self.scheds = d2.build_schedulers(self.cfg)
        self.step = 0
        self.seen: dict[str, Any] = {}
        if observe:
            self._hook_outputs()

    def build_optimizer(self) -> None:
        self.groups = list(self.model.get_params_groups())
        self.optimizer = self.d2.build_optimizer(self.cfg, self.groups)

    def _hook_outputs(self) -> None:
        m = self.model
        for side in ("student", "teacher"):
            for head in ("dino_head", "ibot_head"):
                if head in getattr(m, side):
                    getattr(m, side)[head].register_forward_hook(
                        lambda mod, inp, out, key=f"{side}.{head}": self.seen.__setitem__(key, out.detach())
                    )
        for loss_name in ("dino_loss", "ibot_patch_loss"):
            loss = getattr(m, loss_name)
            for fn in ("sinkhorn_knopp_teacher", "softmax_center_teacher"):
                orig = getattr(loss, fn)

                def wrapped(*a, _orig=orig, _key=f"{loss_name}.targets", **k):
                    out = _orig(*a, **k)
                    self.seen[_key] = out.detach().clone()
                    return out

                setattr(loss, fn, wrapped)

    def collated(self, global_crops, local_crops, masks) -> dict:
        """DINOv2 ``collate_data_and_cast``'s fields, from given masks (its formulas)."""
        idx = masks.flatten().nonzero().flatten()
        weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        return {
            "collated_global_crops": global_crops, "collated_local_crops": local_crops, "collated_masks": masks,
            "mask_indices_list": idx, "masks_weight": weights, "upperbound": int(masks.numel()),
            "n_masked_patches": torch.full((1,), fill_value=idx.shape[0], dtype=torch.long),
        }  # fmt: skip

    def run_step(self, global_crops, local_crops, masks, keep_grads: bool = True) -> dict:
        lr_s, wd_s, mom_s, tt_s, ll_s = self.scheds
        it = self.step
        sched = {"lr": float(lr_s[it]), "wd": float(wd_s[it]), "momentum": float(mom_s[it]),
                 "teacher_temp": float(tt_s[it]), "last_layer_lr": float(ll_s[it])}  # fmt: skip
        self.d2.apply_optim_scheduler(self.optimizer, sched["lr"], sched["wd"], sched["last_layer_lr"])
        self.optimizer.zero_grad(set_to_none=True)
        self.seen.clear()
        with cuda_calls_as_identity():
            loss_dict = self.model.forward_backward(self.collated(global_crops, local_crops, masks), sched["teacher_temp"])
        grads = {n: p.grad.detach().clone() for n, p in self.model.student.named_parameters()
                 if p.grad is not None} if keep_grads else {}
        norms = {}
        for k, v in self.model.student.items():  # FSDP's v.clip_grad_norm_(clip) on plain modules
            norms[k] = float(torch.nn.utils.clip_grad_norm_(list(v.parameters()), self.cfg.optim.clip_grad))
        self.optimizer.step()
        with torch.no_grad():  # update_teacher's foreach lines, over plain (not FSDP) parameters
            t = [p for k in self.model.student.keys() for p in self.model.teacher[k].parameters()]
            s = [p for k in self.model.student.keys() for p in self.model.student[k].parameters()]
            torch._foreach_mul_(t, sched["momentum"])
            torch._foreach_add_(t, s, alpha=1 - sched["momentum"])
        self.step += 1
        w = self.cfg
        losses = {
            "dino_local": w.dino.loss_weight * float(loss_dict.get("dino_local_crops_loss", 0.0)),
            "dino_global": w.dino.loss_weight * float(loss_dict["dino_global_crops_loss"]),
            "ibot": w.ibot.loss_weight * 2 * float(loss_dict["ibot_loss"]),  # logged / 2, accumulated x 1
            "koleo": 2 * float(loss_dict.get("koleo_loss", 0.0)),  # logged / 2
        }
        return {"sched": sched, "losses": losses, "grads": grads, "grad_norms": norms}


# ------------------------------------------------------------------------------------ comparison
def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, max abs difference / max abs value of b)."""
    a, b = a.double(), b.double().reshape(a.shape)
    d = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return d, d / scale if scale else d


def worst(pairs: dict[str, tuple[float, float]]) -> dict[str, Any]:
    name = max(pairs, key=lambda k: pairs[k][1])
    return {"max_abs": max(v[0] for v in pairs.values()), "max_rel": pairs[name][1], "worst": name, "n": len(pairs)}


def compare_case(d2, case: str, n_steps: int) -> dict[str, Any]:
    cfg = parity_config(case)
    ours = PathfmStepper.build(cfg)
    theirs = DinoV2Side(d2, cfg)
    copy_weights_into_dinov2(ours, theirs.model)
    theirs.build_optimizer()  # after the copy, as DINOv2 builds it after loading
    global_crops, local_crops = fixed_crops(cfg, 1)
    # the noise floor: pathfm against itself on crops one float32 ulp away (nextafter towards +inf)
    control = PathfmStepper.build(cfg)
    crops_ulp = [torch.nextafter(c, torch.full_like(c, math.inf)) for c in (global_crops, local_crops)]
    b, n_g = cfg.data.batch_size, cfg.data.crops.n_global
    report: dict[str, Any] = {"case": case, "steps": n_steps}

    # parameter groups: every parameter's (lr multiplier, wd multiplier, last layer)
    ours_g = {n: (g["lr_mult"], g["wd_mult"], g["is_last_layer"]) for g in ours.optimizer.param_groups for n in g["names"]}
    names = {id(p): to_dinov2_name(n) for n, p in theirs.model.student.named_parameters()}
    theirs_g = {names[id(p)]: (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"])
                for g in theirs.optimizer.param_groups for p in g["params"]}  # fmt: skip
    ours_g = {to_dinov2_name(n): v for n, v in ours_g.items()}
    mismatched = sorted(n for n in ours_g if theirs_g.get(n) is None or not (
        math.isclose(ours_g[n][0], theirs_g[n][0], rel_tol=1e-12) and ours_g[n][1:] == theirs_g[n][1:]))  # fmt: skip
    report["param_groups"] = {"n_params": len(ours_g), "same_set": set(ours_g) == set(theirs_g), "mismatched": mismatched}

    trajectory = []
    for step in range(n_steps):
        rec = ours.run_step(global_crops, local_crops)
        got = theirs.run_step(global_crops, local_crops, rec.masks)
        ctl = control.run_step(*crops_ulp)
        seen = theirs.seen
        row: dict[str, Any] = {"step": step + 1}
        row["sched"] = worst({k: (abs(rec.sched[k] - got["sched"][k]), abs(rec.sched[k] - got["sched"][k]) / max(abs(got["sched"][k]), 1e-30)) for k in got["sched"]})
        row["losses"] = {k: [rec.losses[k], got["losses"][k]] for k in got["losses"]}
        row["loss_rel"] = worst({k: (abs(rec.losses[k] - got["losses"][k]), abs(rec.losses[k] - got["losses"][k]) / max(abs(got["losses"][k]), 1e-30)) for k in got["losses"]})
        # DINOv2 orders the teacher CLS targets [crop 1; crop 0] (so that A meets B); pathfm keeps crop order
        t_dino = seen["dino_loss.targets"].reshape(n_g * b, -1)
        t_dino = torch.cat([t_dino[b:], t_dino[:b]])
        m = rec.targets.ibot.shape[0]
        t_ibot = seen["ibot_patch_loss.targets"].reshape(-1, rec.targets.ibot.shape[1])[:m]
        row["targets"] = worst({"dino": diff(rec.targets.dino, t_dino), "ibot": diff(rec.targets.ibot, t_ibot)})
        row["dino_target_entropy"] = [target_entropy(rec.targets.dino), target_entropy(t_dino)]
        row["ibot_target_entropy"] = [target_entropy(rec.targets.ibot), target_entropy(t_ibot)]
        grads = {n: diff(g, got["grads"][to_dinov2_name(n)]) for n, g in rec.grads.items()}
        row["grads"] = worst(grads)
        row["grads_same_set"] = {to_dinov2_name(n) for n in rec.grads} == set(got["grads"])
        row["grad_norms"] = {k: [rec.grad_norms[k], got["grad_norms"][k]] for k in got["grad_norms"]}
        d2_student = dict(theirs.model.student.named_parameters())
        d2_teacher = dict(theirs.model.teacher.named_parameters())
        row["student_params"] = worst({n: diff(p.detach(), d2_student[to_dinov2_name(n)].detach()) for n, p in ours.student.named_parameters()})
        row["teacher_params"] = worst({n: diff(p.detach(), d2_teacher[to_dinov2_name(n)].detach()) for n, p in ours.teacher.named_parameters()})
        c_student, c_teacher = dict(control.student.named_parameters()), dict(control.teacher.named_parameters())
        row["noise_floor"] = {
            "loss_rel": worst({k: (abs(rec.losses[k] - ctl.losses[k]), abs(rec.losses[k] - ctl.losses[k]) / max(abs(ctl.losses[k]), 1e-30)) for k in got["losses"]}),
            "targets": worst({"dino": diff(rec.targets.dino, ctl.targets.dino), "ibot": diff(rec.targets.ibot, ctl.targets.ibot)}),
            "grads": worst({n: diff(g, ctl.grads[n]) for n, g in rec.grads.items()}),
            "student_params": worst({n: diff(p.detach(), c_student[n].detach()) for n, p in ours.student.named_parameters()}),
            "teacher_params": worst({n: diff(p.detach(), c_teacher[n].detach()) for n, p in ours.teacher.named_parameters()}),
        }  # fmt: skip
        if step == 0:  # student logits and (softmax centering) the centers, first step only
            k = cfg.dino_head.n_prototypes
            sd = seen["student.dino_head"].reshape(-1, seen["student.dino_head"].shape[-1])
            n_l = local_crops.shape[0]
            row["student_logits"] = worst({
                "dino_local": diff(rec.outputs.dino_local, sd[:n_l, :k]),
                "dino_global": diff(rec.outputs.dino_global, sd[n_l : n_l + n_g * b, :k]),
                "ibot": diff(rec.outputs.ibot, (seen["student.ibot_head"].reshape(-1, rec.outputs.ibot.shape[1])
                                                if "student.ibot_head" in seen else sd[n_l + n_g * b :])[:m]),
            })  # fmt: skip
        if ours.centers is not None:
            theirs.model.dino_loss.apply_center_update()
            theirs.model.ibot_patch_loss.apply_center_update()
            row["centers"] = worst({
                "dino": diff(ours.centers["dino"].center, theirs.model.dino_loss.center),
                "ibot": diff(ours.centers["ibot"].center, theirs.model.ibot_patch_loss.center),
            })  # fmt: skip
        trajectory.append(row)
        print(f"{case} step {step + 1:3d}: loss rel {row['loss_rel']['max_rel']:.1e}  targets {row['targets']['max_abs']:.1e}  "
              f"grads rel {row['grads']['max_rel']:.1e}  student {row['student_params']['max_abs']:.1e}  "
              f"teacher {row['teacher_params']['max_abs']:.1e} (noise floor: loss {row['noise_floor']['loss_rel']['max_rel']:.1e} "
              f"grads {row['noise_floor']['grads']['max_rel']:.1e} student {row['noise_floor']['student_params']['max_abs']:.1e})  dino H {row['dino_target_entropy'][0]:.4f}/{row['dino_target_entropy'][1]:.4f}",
              flush=True)  # fmt: skip
    report["trajectory"] = trajectory
    return report


def init_one_process_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        store = tempfile.NamedTemporaryFile(prefix="dinov2_parity_", delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


def summarise(reports: list[dict]) -> dict[str, Any]:
    out = {}
    for r in reports:
        traj = r["trajectory"]
        keys = ["loss_rel", "targets", "grads", "student_params", "teacher_params", "sched"] + [
            k for k in ("centers",) if k in traj[0]]  # fmt: skip
        s = {k: {"max_abs": max(t[k]["max_abs"] for t in traj), "max_rel": max(t[k]["max_rel"] for t in traj)} for k in keys}
        s["noise_floor"] = {k: {"max_abs": max(t["noise_floor"][k]["max_abs"] for t in traj),
                                "max_rel": max(t["noise_floor"][k]["max_rel"] for t in traj)} for k in traj[0]["noise_floor"]}
        s["step1_student_logits"] = traj[0]["student_logits"]
        s["step1"] = {k: traj[0][k] for k in keys}
        s["param_groups"] = r["param_groups"]
        s["dino_target_entropy_max_abs"] = max(abs(a - b) for a, b in (t["dino_target_entropy"] for t in traj))
        s["loss_total_max_abs"] = max(abs(sum(v[0] for v in t["losses"].values()) - sum(v[1] for v in t["losses"].values())) for t in traj)
        s["grad_norm_max_rel"] = max(abs(a - b) / b for t in traj for a, b in t["grad_norms"].values())
        out[r["case"]] = s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dinov2", type=Path, help="a facebookresearch/dinov2 source checkout")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--cases", nargs="*", default=list(PARITY_CASES))
    ap.add_argument("--write-fixture", action="store_true", help=f"write {FIXTURE.relative_to(FIXTURE.parents[2])}")
    ap.add_argument("--report", type=Path, help="also write the full per-step comparison as JSON here")
    ap.add_argument("--envelope-only", action="store_true",
                    help="only recompute the noise envelope of the stored traces (no DINOv2 run, traces unchanged)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.envelope_only:
        stored = json.loads(FIXTURE.read_text())
        write_fixture_file(stored["dinov2_agreement"], stored["traces"])
        return
    if args.dinov2 is None:
        ap.error("--dinov2 is required (unless --envelope-only)")
    d2 = import_dinov2(args.dinov2.resolve())
    init_one_process_group()
    reports = [compare_case(d2, case, args.steps) for case in args.cases]
    summary = summarise(reports)
    print(json.dumps(summary, indent=1))
    if args.report:
        args.report.write_text(json.dumps({"summary": summary, "reports": reports}, indent=1))
    if args.write_fixture:
        write_fixture(summary, args.cases)


def rounded(obj: Any, digits: int = 8) -> Any:
    """Every float to ``digits`` significant digits (far below the test's 1e-5 relative floor)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj


def write_fixture(summary: dict[str, Any], cases: list[str]) -> None:
    """pathfm's reference trace per case (this process, one thread, as the comparison ran), stored with the
    comparison's summary and the traces' noise envelope."""
    write_fixture_file(summary, {case: trace(case, FIXTURE_STEPS) for case in cases})


def write_fixture_file(summary: dict[str, Any], traces: dict[str, dict[str, Any]]) -> None:
    """The fixture: ``traces`` as given, and their float32 noise envelope measured now: per case, family and
    step, the largest relative deviation so far of the same run on crops one ulp away or under another float
    kernel / thread count (benchmarks/step_trace.py: noise_envelope; the CI test's tolerance scales it), with
    each perturbation's largest deviation per family (``noise_sources``)."""
    envelope, sources = noise_envelope(traces)
    fixture = {
        "what": "pathfm's training step on fixed crops (benchmarks/step_trace.py: trace), after it was compared with "
                "facebookresearch/dinov2's step by benchmarks/dinov2_step_parity.py (dinov2_agreement: that run)",
        "steps": len(next(iter(traces.values()))["steps"]),
        "dinov2_agreement": summary,
        "noise_envelope": envelope,
        "noise_sources": sources,
        "traces": traces,
    }  # fmt: skip
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(rounded(fixture), separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
