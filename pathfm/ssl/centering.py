"""Teacher targets: Sinkhorn-Knopp and softmax centering (DINOv2 ``loss/dino_clstoken_loss.py``).

All functions run without autograd and in float32 whatever the autocast state.

Distributed reduction hook ``all_reduce``: ``None`` for one process, else ``torch.distributed.all_reduce``
itself (or any callable ``f(tensor, op=torch.distributed.ReduceOp.X)`` that reduces in place across ranks
or returns the reduced tensor). Every rank must call these functions the same number of times, also when
its local batch is empty (an iBOT step without masked patches): the empty case is handled and still takes
part in every reduction, so no rank deadlocks.

Implementation note (same algorithm as A.3, exact over the whole float32 range): Sinkhorn-Knopp runs in its
scaling form, P = R_tot * diag(v) Q diag(u) with Q = exp(Z/tau), updating only the prototype scalings u (K)
and the sample scalings v (R) -- exactly the sequence of normalisations of A.3 -- and it keeps all three in
log space: log u_k = -log K - logsumexp_r(log v_r + Z_rk/tau) (the column log-sum-exp all-reduced over
ranks: column max with op MAX, then the shifted sums with op SUM) and log v_r = -log R_tot -
logsumexp_k(Z_rk/tau + log u_k). Nothing is exponentiated before it is shifted by its own maximum, so no
prototype or sample can underflow to zero mass, however far its logits lie below the global maximum (the
scaling form in float32 silently lost such prototypes once their best logit/tau was ~87 below the top:
exp underflows at -87.3). The reference's initial division by the global sum is a constant that the first
column normalisation cancels, so it is skipped. Tested against A.3 in float64 / extended precision at
logit spreads up to 1,000 (tests/test_ssl_sinkhorn_exact.py).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

AllReduce = Optional[Callable[..., Any]]


def _reduce(t: Tensor, all_reduce: AllReduce, op: str = "sum") -> Tensor:
    """All-reduce ``t`` (sum or max) with the hook; identity for one process. Never modifies ``t``."""
    if all_reduce is None:
        return t
    import torch.distributed as dist

    out = t.clone()
    ret = all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return ret if isinstance(ret, Tensor) else out


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: Tensor, temp: float, n_iters: int = 3, all_reduce: AllReduce = None) -> Tensor:
    """Sinkhorn-Knopp teacher targets (SwAV / DINOv2), float32, (R, K) -> (R, K).

    Alternately (``n_iters`` times) gives every prototype the total mass 1/K (sums over all samples of all
    ranks) and every sample the mass 1/R_tot (local), then rescales so that each row sums to 1. Columns
    then carry (nearly, exactly as n_iters grows) equal mass R_tot/K. Invariant to a constant added to all
    logits. ``teacher_logits``: the rows of this rank (padding rows excluded by the caller). Exact over the
    whole float32 range (log-domain iterations, see the module docstring).
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects (rows, prototypes) logits, got shape {tuple(teacher_logits.shape)}")
    if temp <= 0 or n_iters < 1:
        raise ValueError(f"sinkhorn_knopp needs temp > 0 and n_iters >= 1, got temp={temp}, n_iters={n_iters}")
    with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        log_q = teacher_logits.float() / temp  # log of the reference's exp(Z/tau), up to a constant
        n_rows, n_protos = log_q.shape
        # no host sync: with R_tot = 0 every rank is empty and everything below works on empty tensors
        r_tot = _reduce(log_q.new_tensor([float(n_rows)]), all_reduce, "sum")
        log_k, log_r = math.log(n_protos), torch.log(r_tot)
        log_v = log_q.new_zeros(n_rows)  # log sample scalings (the global start normalisation cancels)
        for _ in range(n_iters):
            log_mass = _column_logsumexp(log_q + log_v.unsqueeze(1), all_reduce)  # (K,) all samples, all ranks
            log_u = -log_k - log_mass
            log_v = -log_r - torch.logsumexp(log_q + log_u, dim=1)  # (R,) local
        return log_q.add_(log_u).add_((log_v + log_r).unsqueeze(1)).exp_()


def _column_logsumexp(x: Tensor, all_reduce: AllReduce) -> Tensor:
    """log sum_r exp(x[r, k]) over the rows of every rank, (R, K) -> (K,), without under- or overflow.

    Two reductions (column max with op MAX, then the shifted sums); an empty rank contributes -inf / 0.
    """
    local_max = x.amax(dim=0) if x.shape[0] else x.new_full((x.shape[1],), -math.inf)
    col_max = _reduce(local_max, all_reduce, "max")
    shift = torch.where(torch.isfinite(col_max), col_max, torch.zeros_like(col_max))
    sums = _reduce(torch.exp(x - shift).sum(dim=0), all_reduce, "sum")
    return torch.log(sums) + shift


@torch.no_grad()
def softmax_center(teacher_logits: Tensor, center: Tensor, temp: float) -> Tensor:
    """Centered, sharpened teacher targets softmax((z - c) / temp) over the prototypes, float32."""
    if temp <= 0:
        raise ValueError(f"softmax_center needs temp > 0, got {temp}")
    with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        z = teacher_logits.float() - center.to(device=teacher_logits.device, dtype=torch.float32)
        return torch.softmax(z / temp, dim=-1)


class Center(nn.Module):
    """EMA center of the teacher logits for softmax centering (DINO, and a separate one for iBOT).

    ``c <- m * c + (1 - m) * mean_over_ranks(mean of this rank's logits)``, c starts at 0, fp32 buffer.

    One-step-delay semantics: DINOv2 queues the statistic of step t asynchronously and folds it in at the
    start of step t+1, so the targets of step t use c_{t-1} (the center including batches up to t-1).
    :meth:`targets` gives exactly that, synchronously: it computes the targets with the current center and
    THEN folds in this batch. The only state is the center itself, so ``state_dict`` captures everything
    (a resumed run continues bit-identically).

    The batch statistic is the mean over ranks of each rank's mean (DINOv2's iBOT rule; for the DINO CLS
    center, with equal per-rank batches, this equals the global mean). Ranks with an empty batch are left
    out of the mean; if every rank is empty the center is unchanged.
    """

    center: Tensor

    def __init__(self, n_prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, n_prototypes, dtype=torch.float32))

    @torch.no_grad()
    def update(self, teacher_logits: Tensor, all_reduce: AllReduce = None) -> None:
        """Fold the (all-reduced) mean of this batch's teacher logits into the center."""
        with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
            z = teacher_logits.float().reshape(-1, self.center.shape[1])
            has_rows = float(z.shape[0] > 0)
            local_mean = z.mean(dim=0) if z.shape[0] else z.new_zeros(z.shape[1])
            stat = torch.cat([local_mean, z.new_tensor([has_rows])])
            stat = _reduce(stat, all_reduce, "sum").to(self.center.device)
            n_ranks = stat[-1]  # ranks with a non-empty batch (kept on device: no host sync)
            batch_center = (stat[:-1] / n_ranks.clamp(min=1.0)).unsqueeze(0)
            updated = self.momentum * self.center + (1.0 - self.momentum) * batch_center
            self.center.copy_(torch.where(n_ranks > 0, updated, self.center))

    @torch.no_grad()
    def targets(self, teacher_logits: Tensor, temp: float, all_reduce: AllReduce = None) -> Tensor:
        """Targets with the current center (c_{t-1}), then the center update with this batch."""
        probs = softmax_center(teacher_logits, self.center, temp)
        self.update(teacher_logits, all_reduce)
        return probs
