"""Per-step health signals of DINO / iBOT training, logged in ``metrics.jsonl`` as ``diag/*`` keys.

A DINO run learns only while the teacher's targets carry information: their mean entropy must sit well
below ln K (K prototypes). At ln K the teacher is uniform, the DINO and iBOT losses give the student no
signal and only the KoLeo / KDE terms shape the backbone. These functions are pure (tensors in, float32
scalars out), run without autograd, and cost O(rows x K) per step.

Keys written by :func:`step_diagnostics`:

* ``diag/dino_target_entropy``  mean entropy of the teacher's DINO targets (nats; ln K = uniform)
* ``diag/dino_student_entropy`` mean entropy of softmax(student global-crop logits / student temperature)
* ``diag/ibot_target_entropy``  the same for the iBOT targets at the masked patches (NaN without any)
* ``diag/dino_ln_k``            ln K, the value both entropies and the per-pair cross-entropy tend to on collapse
* ``diag/dino_ce_per_pair``     the DINO cross-entropy per (student view, teacher view) pair, unweighted
* ``diag/teacher_spread_prototypes``  mean over images of the std over prototypes of the teacher DINO logits
* ``diag/teacher_spread_images``      mean over prototypes of the std over images (what centering leaves)
* ``diag/teacher_cls_cosine``   mean cosine between the teacher CLS embeddings of different crops (1 = identical)
* ``diag/teacher_cls_std``      mean over dimensions of the std across the batch of the teacher CLS (0 = identical)
* ``diag/teacher_cls_rank``     RankMe effective rank of the batch's teacher CLS matrix (1 = one direction)
* ``diag/head_max_cosine``      mean over images of max_k cos(bottleneck output, prototype k) of the teacher
                                DINO head (near 0: the output lies orthogonal to every prototype)
* ``diag/layerscale``           mean |gamma| of the student backbone's LayerScale (absent without LayerScale)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NAN = float("nan")


#: on the CPU, :func:`mean_entropy` works through blocks of about this many elements, in place: the iBOT
#: targets are (masked patches, K), 0.2-0.3 GB at K = 65,536-131,072, and three passes over whole-matrix
#: temporaries cost 3x the log itself (docs/benchmarks.md, "Training step against DINOv2's own step")
CPU_BLOCK = 1 << 20


@torch.no_grad()
def mean_entropy(probs: Tensor) -> Tensor:
    """Mean over rows of -sum_k p_k log p_k (nats) of an (R, K) probability matrix; NaN for R = 0. The same
    operations per row whatever the blocking, so the same value."""
    p = probs.float()
    if p.shape[0] == 0:
        return p.new_tensor(NAN)
    rows = max(1, CPU_BLOCK // max(1, p.shape[1])) if p.device.type == "cpu" else p.shape[0]
    if rows >= p.shape[0]:
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
    per_row = p.new_empty(p.shape[0])
    for i in range(0, p.shape[0], rows):
        block = p[i : i + rows]
        per_row[i : i + rows] = block.clamp_min(1e-30).log_().mul_(block).sum(-1)
    return -per_row.mean()


@torch.no_grad()
def softmax_entropy(logits: Tensor, temp: float) -> Tensor:
    """Mean entropy of softmax(logits / temp) over the rows of (R, K) logits."""
    if logits.shape[0] == 0:
        return logits.new_tensor(NAN, dtype=torch.float32)
    logq = F.log_softmax(logits.float() / temp, dim=-1)
    return -(logq.exp() * logq).sum(-1).mean()


@torch.no_grad()
def logit_spread(logits: Tensor, dim: int) -> Tensor:
    """Mean standard deviation of (R, K) logits along ``dim`` (1: across prototypes, 0: across rows)."""
    x = logits.float()
    if x.shape[dim] < 2:
        return x.new_tensor(NAN)
    return x.std(dim=dim).mean()


@torch.no_grad()
def mean_pairwise_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over all ordered pairs of distinct rows of (n, D); NaN for n < 2."""
    n = x.shape[0]
    if n < 2:
        return x.new_tensor(NAN, dtype=torch.float32)
    z = F.normalize(x.float(), dim=-1)
    total = z.sum(0).pow(2).sum() - z.pow(2).sum()  # sum_{i != j} z_i . z_j
    return total / (n * (n - 1))


@torch.no_grad()
def max_prototype_cosine(logits: Tensor, gain: Tensor) -> Tensor:
    """Mean over rows of max_k cos(z, w_k), from head logits g_k cos(z, w_k) and the gains g (K, 1) or (K,)."""
    if logits.shape[0] == 0:
        return logits.new_tensor(NAN, dtype=torch.float32)
    cos = logits.float() / gain.float().reshape(1, -1)
    return cos.amax(dim=-1).mean()


@torch.no_grad()
def layerscale_magnitude(backbone: nn.Module) -> Tensor | None:
    """Mean |gamma| over every LayerScale of ``backbone`` (parameters named ``*.gamma``); None if there is none."""
    from pathfm.ssl.sharding import full_value  # a sharded (FSDP) backbone's gammas are DTensors

    gammas = [full_value(p.detach()).float().abs().mean() for n, p in backbone.named_parameters() if n.endswith(".gamma")]
    return torch.stack(gammas).mean() if gammas else None


@torch.no_grad()
def effective_rank(x: Tensor) -> Tensor:
    """RankMe effective rank of the (n, D) rows (:func:`pathfm.backbone.embedding_stats.rankme`, Garrido et al. 2023):
    1 when every row points the same way, up to min(n, D). One SVD of a batch-sized matrix on the host;
    NaN when there are no rows or any entry is not finite (a diverged step: the loss check reports it)."""
    from pathfm.backbone.embedding_stats import rankme

    if x.shape[0] == 0:
        return x.new_tensor(NAN, dtype=torch.float32)
    rows = x.detach().float().cpu().numpy()  # the one wait for the device (on logged steps): the finite check is on the host
    value = rankme(rows) if np.isfinite(rows).all() else NAN
    return torch.tensor(value, dtype=torch.float32, device=x.device)  # stacked with the other values on the device


def dino_ce_per_pair(loss_values: dict[str, float], dino_weight: float) -> float:
    """The unweighted DINO cross-entropy per view pair from the weighted loss parts ``dino_local`` and
    ``dino_global`` (each already a mean over pairs, see :func:`pathfm.ssl.losses.dino_loss`); NaN at weight 0."""
    if dino_weight <= 0:
        return NAN
    return (loss_values["dino_local"] + loss_values["dino_global"]) / dino_weight


@torch.no_grad()
def step_diagnostics(
    *,
    teacher_dino_logits: Tensor,
    teacher_dino_targets: Tensor,
    teacher_ibot_targets: Tensor,
    teacher_cls: Tensor,
    teacher_gain: Tensor,
    student_dino_global: Tensor,
    student_temp: float,
    student_backbone: nn.Module,
) -> dict[str, Tensor]:
    """The ``diag/*`` values of one micro-step as 0-d float32 tensors (one host sync for all of them)."""
    out = {
        "diag/dino_target_entropy": mean_entropy(teacher_dino_targets),
        "diag/dino_student_entropy": softmax_entropy(student_dino_global.detach(), student_temp),
        "diag/ibot_target_entropy": mean_entropy(teacher_ibot_targets),
        "diag/dino_ln_k": teacher_dino_logits.new_tensor(math.log(teacher_dino_logits.shape[1]), dtype=torch.float32),
        "diag/teacher_spread_prototypes": logit_spread(teacher_dino_logits, dim=1),
        "diag/teacher_spread_images": logit_spread(teacher_dino_logits, dim=0),
        "diag/teacher_cls_cosine": mean_pairwise_cosine(teacher_cls),
        "diag/teacher_cls_std": logit_spread(teacher_cls, dim=0),
        "diag/teacher_cls_rank": effective_rank(teacher_cls),
        "diag/head_max_cosine": max_prototype_cosine(teacher_dino_logits, teacher_gain),
    }
    gamma = layerscale_magnitude(student_backbone)
    if gamma is not None:
        out["diag/layerscale"] = gamma.to(teacher_dino_logits.device)
    return {k: v.float().to(teacher_dino_logits.device) for k, v in out.items()}
