"""DINO CLS-token loss and iBOT masked-patch loss (DINOv2: Oquab et al. 2023, and facebookresearch/dinov2,
``dinov2/loss/dino_clstoken_loss.py`` and ``ibot_patch_loss.py``).

Pure functions of already-projected logits and teacher probabilities, computed in float32 whatever the
autocast state. Per-token cross-entropy with student temperature tau_s:

    H(p, s) = - sum_k p_k * log_softmax(s / tau_s)_k

Rows are crop-major: ``[crop 0 of all B images; crop 1 of all B images; ...]``.

Extension (keyword-only, default keeps the briefed API): ``dino_loss(..., n_global=2)`` names the number
of global crops, since ``n_g * B`` rows alone do not say which is which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_2d(name: str, t: Tensor) -> None:
    if t.ndim != 2:
        raise ValueError(f"{name} must be (rows, prototypes), got shape {tuple(t.shape)}")


def _check_same_2d(name_a: str, a: Tensor, name_b: str, b: Tensor, expected: str) -> None:
    """Both 2-D and of one shape (student logits vs. the teacher targets they are scored against)."""
    _check_2d(name_a, a)
    _check_2d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape {expected}")


def dino_loss(
    student_global_logits: Tensor,
    student_local_logits: Tensor,
    teacher_probs: Tensor,
    student_temp: float = 0.1,
    *,
    n_global: int = 2,
) -> tuple[Tensor, Tensor]:
    """DINO loss over the (student view, teacher view) pairs of different views -> (local part, global part).

    With n_g global and n_l local crops, T = n_g (n_g - 1) + n_g n_l pairs:

    * local  = (1/T) sum_{l, g} (1/B) sum_b H(p_{g,b}, s_{l,b})
    * global = (1/T) sum_{g != g'} (1/B) sum_b H(p_{g',b}, s_{g,b})  (student crop A vs teacher crop B)

    ``teacher_probs`` come in natural crop order (row block g = targets of global crop g); the pairing of
    each student global crop with the OTHER crops' targets happens here. At initialisation (uniform
    targets) the parts read about (n_g n_l / T) ln K and (n_g (n_g-1) / T) ln K.
    """
    _check_same_2d("student_global_logits", student_global_logits, "teacher_probs", teacher_probs, "(n_global * B, K)")
    _check_2d("student_local_logits", student_local_logits)
    n_rows, k = teacher_probs.shape
    if n_global < 1 or n_rows % n_global:
        raise ValueError(f"{n_rows} global rows do not split into n_global={n_global} crops")
    b = n_rows // n_global
    if b == 0:
        raise ValueError("dino_loss needs at least one image (got 0 global rows)")
    if student_local_logits.shape[1] != k or student_local_logits.shape[0] % b:
        raise ValueError(
            f"student_local_logits {tuple(student_local_logits.shape)} must be (n_local * {b}, {k})"
        )
    n_local = student_local_logits.shape[0] // b
    n_pairs = n_global * (n_global - 1) + n_global * n_local
    if n_pairs == 0:
        raise ValueError("dino_loss needs at least two views (n_global >= 2 or n_local >= 1)")

    with torch.autocast(device_type=teacher_probs.device.type, enabled=False):
        p = teacher_probs.float().reshape(n_global, b, k)
        p_sum = p.sum(dim=0)  # (B, K): targets of all global crops of each image
        logq_g = F.log_softmax(student_global_logits.float() / student_temp, dim=-1).reshape(n_global, b, k)
        # student global crop g against every OTHER global crop's target: sum_{g' != g} p_{g'} = p_sum - p_g
        global_part = -((p_sum.unsqueeze(0) - p) * logq_g).sum() / (b * n_pairs)
        if n_local:
            logq_l = F.log_softmax(student_local_logits.float() / student_temp, dim=-1).reshape(n_local, b, k)
            local_part = -(p_sum.unsqueeze(0) * logq_l).sum() / (b * n_pairs)
        else:
            local_part = global_part.new_zeros(())
    return local_part, global_part


def ibot_loss(
    student_patch_logits: Tensor,
    teacher_patch_probs: Tensor,
    patch_weights: Tensor,
    n_crops: int,
    student_temp: float = 0.1,
) -> Tensor:
    """iBOT masked-patch loss: - (1/n_crops) sum_i (1/m_i) sum_{p in M_i} sum_k P_{i,p,k} log q_{i,p,k}.

    Rows are the M masked patches of all global crops (student logits at the masked tokens, teacher targets
    of the unmasked tokens at the same positions); ``patch_weights[m]`` = 1/m_i of the crop the patch belongs
    to (0 drops a padding row); ``n_crops`` counts ALL global crops on this device, masked or not (DINOv2).
    """
    _check_same_2d("student_patch_logits", student_patch_logits, "teacher_patch_probs", teacher_patch_probs, "(M, K)")
    if patch_weights.shape != (student_patch_logits.shape[0],):
        raise ValueError(f"patch_weights must be (M,) = ({student_patch_logits.shape[0]},), got {tuple(patch_weights.shape)}")
    if n_crops < 1:
        raise ValueError(f"ibot_loss needs n_crops >= 1 (all global crops, masked or not), got {n_crops}")
    with torch.autocast(device_type=teacher_patch_probs.device.type, enabled=False):
        logq = F.log_softmax(student_patch_logits.float() / student_temp, dim=-1)
        per_patch = -(teacher_patch_probs.float() * logq).sum(dim=-1)
        return (per_patch * patch_weights.float()).sum() / n_crops
