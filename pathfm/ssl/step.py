"""One DINOv2 training step as short named pieces (the reference's ``forward_backward``, unrolled).

    masks    = make_ibot_masks(...)                   # block masks for the global crops, pure f(seed, step)
    targets  = teacher_targets(teacher, batch, ...)   # no grad: teacher CLS + masked patches -> SK / centering
    out      = student(global, local, masks)          # one backbone pass over all crops + heads
    parts    = ssl_losses(out, targets, ...)          # DINO local/global, iBOT, KoLeo, KDE (float32)
    check_finite(parts, step)                          # NonFiniteLossError names the loss and step
    backward(total / grad_accum)                       # (scaled when fp16)
    clip_and_step(...)                                 # per-submodule clipping, optimizer (+ scaler) step
    ema_update(teacher, student, momentum)             # theta_t <- m theta_t + (1 - m) theta_s

Formulas and their sources are in the pure modules (losses, centering, regularizers, masking); this
module only wires them together. Crop order everywhere is crop-major: [crop0 of all B; crop1 of all B].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from pathfm.backbone.vit import VisionTransformer, build_backbone
from pathfm.errors import NonFiniteLossError
from pathfm.ssl.sharding import full_value, local_tensor

AllReduce = Callable[[Tensor], Tensor]
LOSS_PARTS = ("dino_local", "dino_global", "ibot", "koleo", "kde")


# ------------------------------------------------------------------------------------ the networks
class SSLNet(nn.Module):
    """Backbone + DINO head (+ a separate iBOT head). Its ``forward`` is the student forward, so the
    whole student can be wrapped in DDP as one module."""

    def __init__(self, backbone: VisionTransformer, dino_head: nn.Module, ibot_head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def patch_head(self) -> nn.Module:
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def forward(self, global_crops: Tensor, local_crops: Tensor, masks: Tensor,
                rows: Tensor | None = None) -> "StudentOutputs":
        g, loc = self.backbone.forward_features_list([global_crops, local_crops], [masks, None])
        masked_patches = select_masked(g["patch"], masks, rows)  # (M, D), row-major over (crop, patch)
        n_g, n_l = g["cls"].shape[0], loc["cls"].shape[0]
        if self.ibot_head is None:  # shared head: one call over [global CLS; local CLS; masked patches]
            logits = self.dino_head(torch.cat([g["cls"], loc["cls"], masked_patches]))
            dino_g, dino_l, ibot = logits.split([n_g, n_l, masked_patches.shape[0]])
        else:
            dino_g, dino_l = self.dino_head(torch.cat([g["cls"], loc["cls"]])).split([n_g, n_l])
            ibot = self.ibot_head(masked_patches)
        return StudentOutputs(global_cls=g["cls"], dino_global=dino_g, dino_local=dino_l, ibot=ibot)


@dataclass
class StudentOutputs:
    global_cls: Tensor  # (n_g*B, D) backbone CLS after the final norm (for KoLeo / KDE)
    dino_global: Tensor  # (n_g*B, K)
    dino_local: Tensor  # (n_l*B, K)
    ibot: Tensor  # (M, K') logits of the masked global patches


@dataclass
class TeacherTargets:
    dino: Tensor  # (n_g*B, K) probabilities, natural crop order
    ibot: Tensor  # (M, K') probabilities of the teacher's (unmasked) tokens at the masked positions
    dino_logits: Tensor  # (n_g*B, K) the teacher DINO head's logits before centering (for diagnostics)
    cls: Tensor  # (n_g*B, D) teacher backbone CLS after the final norm (for diagnostics)


def build_heads(cfg: Any, embed_dim: int) -> tuple[nn.Module, nn.Module | None]:
    from pathfm.ssl.heads import DINOHead

    dino = DINOHead(embed_dim, cfg.dino_head)
    ibot = DINOHead(embed_dim, cfg.ibot_head) if cfg.loss.separate_ibot_head else None
    return dino, ibot


def build_student_teacher(cfg: Any) -> tuple[SSLNet, SSLNet]:
    """Student (with drop path) and an exact copy as teacher (drop path 0, no grad, eval mode)."""
    backbone = build_backbone(cfg.model)
    dino, ibot = build_heads(cfg, backbone.embed_dim)
    student = SSLNet(backbone, dino, ibot)
    teacher = make_teacher(student, cfg)
    return student, teacher


def make_teacher(student: SSLNet, cfg: Any) -> SSLNet:
    """A frozen copy of ``student`` whose backbone has no stochastic depth."""
    teacher = copy.deepcopy(student)
    for blk in teacher.backbone.blocks:
        blk.drop_path_rate = 0.0
    teacher.requires_grad_(False)
    return teacher.eval()


# ------------------------------------------------------------------------------------------ masks
def make_ibot_masks(
    loss_cfg: Any,
    *,
    seed_key: list[int],
    n_global: int,
    images_global: int,
    rank_images: slice,
    grid: int,
) -> tuple[Tensor, Tensor]:
    """iBOT block masks for this rank's global crops: (n_global*B, grid*grid) bool and per-crop weights.

    The masks of the WHOLE global batch (all ranks) are drawn from ``numpy.random.default_rng(seed_key)``
    and each rank takes its images, so masks do not depend on the number of processes.
    """
    from pathfm.ssl.masking import block_masks

    rng = np.random.default_rng(seed_key)
    masks, weights = block_masks(
        n_global * images_global, (grid, grid), loss_cfg.mask_probability, tuple(loss_cfg.mask_ratio), rng
    )
    masks = torch.as_tensor(np.asarray(masks), dtype=torch.bool).view(n_global, images_global, -1)
    weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32).view(n_global, images_global)
    masks = masks[:, rank_images].reshape(-1, grid * grid)
    weights = weights[:, rank_images].reshape(-1)
    return masks, weights


@dataclass(frozen=True)
class MaskedRows:
    """Where the masked patches are, found on the host where the masks are drawn (DINOv2's loader passes mask
    indices too), so that selecting them never makes the host wait for the device as boolean-mask indexing
    on a GPU does (it must learn how many rows there are): ``rows`` the flat (crop x patch) indices in
    row-major order, as ``x[masks]`` takes them; ``weights`` each masked patch's iBOT weight."""

    rows: Tensor
    weights: Tensor


def masked_rows(masks: Tensor, mask_weights: Tensor, device: torch.device) -> MaskedRows:
    """:class:`MaskedRows` of host masks (n_crops*B, P) and per-crop weights (n_crops*B,), copied to ``device``
    without waiting (pinned memory, non-blocking) on CUDA."""
    m = masks.numpy()
    rows = torch.from_numpy(np.flatnonzero(m))
    weights = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(mask_weights.numpy()[:, None], m.shape)[m]))
    return MaskedRows(to_device(rows, device), to_device(weights, device))


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device``; on CUDA through pinned memory and a non-blocking copy (a plain copy from
    pageable memory synchronises the stream)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def select_masked(x: Tensor, masks: Tensor, rows: Tensor | None) -> Tensor:
    """The rows of ``x`` (N, P, D) where ``masks`` (N, P) is set: ``x[masks]``, by host-computed ``rows``
    (:func:`masked_rows`) when given, the same rows in the same order without a device-to-host sync."""
    if rows is None:
        return x[masks]
    return x.flatten(0, 1).index_select(0, rows)


# ---------------------------------------------------------------------------------------- teacher
def _targets_from_logits(
    logits: Tensor, temp: float, loss_cfg: Any, center: Any | None, all_reduce: AllReduce | None
) -> Tensor:
    from pathfm.ssl.centering import sinkhorn_knopp

    logits = logits.float()
    if loss_cfg.centering == "sinkhorn_knopp":
        return sinkhorn_knopp(logits, temp, n_iters=loss_cfg.sinkhorn_iterations, all_reduce=all_reduce)
    return center.targets(logits, temp, all_reduce=all_reduce)  # c_{t-1}, then folds this batch in


@torch.no_grad()
def teacher_targets(
    teacher: SSLNet,
    global_crops: Tensor,
    masks: Tensor,
    temp: float,
    loss_cfg: Any,
    centers: dict[str, Any] | None,
    all_reduce: AllReduce | None,
    rows: Tensor | None = None,
) -> TeacherTargets:
    """Teacher on the unmasked global crops -> DINO targets (CLS) and iBOT targets (masked positions;
    ``rows``: their host-computed indices, :func:`masked_rows`)."""
    feats = teacher.backbone.forward_features(global_crops)
    masked = select_masked(feats["patch"], masks, rows)
    if teacher.ibot_head is None:
        n = feats["cls"].shape[0]
        dino_logits, ibot_logits = teacher.dino_head(torch.cat([feats["cls"], masked])).split([n, masked.shape[0]])
    else:
        dino_logits, ibot_logits = teacher.dino_head(feats["cls"]), teacher.ibot_head(masked)
    centers = centers or {}
    dino = _targets_from_logits(dino_logits, temp, loss_cfg, centers.get("dino"), all_reduce)
    ibot = _targets_from_logits(ibot_logits, temp, loss_cfg, centers.get("ibot"), all_reduce)
    return TeacherTargets(dino=dino, ibot=ibot, dino_logits=dino_logits, cls=feats["cls"])


# ----------------------------------------------------------------------------------------- losses
def ssl_losses(
    out: StudentOutputs, targets: TeacherTargets, masks: Tensor, mask_weights: Tensor, loss_cfg: Any, n_global: int,
    patch_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """The weighted loss parts (float32); their sum is the training loss. ``patch_weights``: each masked
    patch's weight computed on the host (:func:`masked_rows`), else from ``masks`` and ``mask_weights``."""
    from pathfm.ssl.losses import dino_loss, ibot_loss
    from pathfm.ssl.regularizers import kde, koleo

    t = loss_cfg.student_temp
    local, glob = dino_loss(out.dino_global.float(), out.dino_local.float(), targets.dino, t, n_global=n_global)
    if patch_weights is None:
        patch_weights = mask_weights.to(out.ibot.device)[:, None].expand_as(masks)[masks]
    ibot = ibot_loss(out.ibot.float(), targets.ibot, patch_weights, masks.shape[0], t)
    zero = out.global_cls.new_zeros((), dtype=torch.float32)
    koleo_term, kde_term = zero, zero
    chunks = out.global_cls.float().chunk(n_global)  # never across the two crops of one image
    if loss_cfg.koleo_weight > 0:
        koleo_term = loss_cfg.koleo_weight * sum(koleo(c) for c in chunks)
    if loss_cfg.kde_weight > 0:
        kde_term = loss_cfg.kde_weight * sum(kde(c, loss_cfg.kde_kappa) for c in chunks)
    return {
        "dino_local": loss_cfg.dino_weight * local,
        "dino_global": loss_cfg.dino_weight * glob,
        "ibot": loss_cfg.ibot_weight * ibot,
        "koleo": koleo_term,
        "kde": kde_term,
    }


def check_finite(parts: dict[str, float], step: int) -> None:
    """Raise NonFiniteLossError naming the first NaN/inf loss part (inf counts, unlike DINOv2's check)."""
    for name, value in parts.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss/{name} is {value} at step {step}; nothing was saved for this step. Lower the lr or the "
                f"regulariser weight, or resume from the last checkpoint"
            )


# ------------------------------------------------------------------------------- backward + update
def submodules_for_clipping(student: SSLNet) -> dict[str, nn.Module]:
    mods = {"backbone": student.backbone, "dino_head": student.dino_head}
    if student.ibot_head is not None:
        mods["ibot_head"] = student.ibot_head
    return mods


def clip_and_step(
    student: SSLNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip: float | None,
    step: int,
) -> dict[str, float]:
    """Unscale, clip each student submodule's gradient norm separately (DINOv2), step, zero grads.

    Returns the pre-clip norm of each submodule. Non-finite gradients without a scaler raise
    NonFiniteLossError; with a scaler the step is skipped (the scaler lowers its scale).
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = clip if clip is not None else float("inf")
    norm_tensors: dict[str, Tensor] = {}
    for name, mod in submodules_for_clipping(student).items():
        params = [p for p in mod.parameters() if p.grad is not None]
        if params:
            # sharded (FSDP) gradients are DTensors: clip_grad_norm_ reduces the shard norms to the global one
            norm_tensors[name] = full_value(torch.nn.utils.clip_grad_norm_(params, max_norm))
    # one device->host sync for all submodules (not one per submodule)
    values = torch.stack(list(norm_tensors.values())).tolist() if norm_tensors else []
    norms = dict(zip(norm_tensors, values))
    if scaler is None:
        bad = [k for k, v in norms.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(f"gradient norm of {bad[0]} is {norms[bad[0]]} at step {step}; nothing was saved "
                                     "for this step. Lower the lr, or resume from the last checkpoint")
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def ema_update(teacher: SSLNet, student: SSLNet, momentum: float) -> None:
    """theta_t <- m * theta_t + (1 - m) * theta_s for every parameter (DINO's mean teacher); on each rank's
    local shards when student and teacher are sharded alike (FSDP), which is the whole update unsharded."""
    t_params = [local_tensor(p) for p in teacher.parameters()]
    s_params = [local_tensor(p.detach()) for p in student.parameters()]
    if len(t_params) != len(s_params) or any(a.shape != b.shape for a, b in zip(t_params, s_params)):
        raise RuntimeError("teacher and student have different parameter lists or shardings")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
