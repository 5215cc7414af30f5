"""Embedding-spreading regularisers on the student backbone CLS token: KoLeo (DINOv2) and KDE (Midnight).

Both take the B embeddings of ONE global crop on this device (the caller applies them per global crop and
sums, as DINOv2 does for KoLeo) and are computed in float32 with autocast off, whatever the input dtype.

* KoLeo (Sablayrolles et al. 2019; DINOv2 ``loss/koleo_loss.py``, A.3): -(1/n) sum_i log(d_i + eps), d_i the
  distance to the nearest other embedding. Unbounded on duplicates (d = eps * sqrt(D) in fp32): huge
  gradients on the near-duplicate tiles of pathology batches.
* KDE (Midnight; Virchow2; Wang & Isola 2020 uniformity): the mean log of a leave-one-out von Mises-Fisher
  kernel density at each embedding,

      L = (1/n) sum_i log( (1/(n-1)) sum_{j != i} exp(kappa (z_i . z_j - 1)) ),   z = x / ||x||,

  minimised to spread the embeddings. Each term lies in [-2 kappa, 0]; finite value and gradient on exact
  duplicates. Computed with logsumexp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pathfm.errors import ConfigError


def _check_batch(name: str, x: Tensor, weight_field: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} expects (n, D) embeddings, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ConfigError(
            f"{name} needs at least 2 embeddings per global crop on each device, got n={x.shape[0]}: "
            f"raise data.batch_size to >= 2 or switch the regulariser off ({weight_field}=0)"
        )


def koleo(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo loss of (n, D) embeddings, float32 (DINOv2 formula incl. PairwiseDistance's +eps per coordinate)."""
    _check_batch("koleo", x, "loss.koleo_weight")
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            sim = z @ z.t()
            sim.fill_diagonal_(-1.0)
            nearest = sim.argmax(dim=1)
        d = torch.linalg.vector_norm(z - z[nearest] + eps, dim=-1)
        return -torch.log(d + eps).mean()


def kde(x: Tensor, kappa: float) -> Tensor:
    """Leave-one-out vMF-KDE log-density of (n, D) embeddings, averaged over the n points, float32."""
    _check_batch("kde", x, "loss.kde_weight")
    if kappa <= 0:
        raise ConfigError(f"loss.kde_kappa must be > 0, got {kappa}")
    n = x.shape[0]
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = F.normalize(x.float(), p=2, dim=-1)
        logits = kappa * (z @ z.t() - 1.0)
        self_pairs = torch.eye(n, dtype=torch.bool, device=x.device)
        logits = logits.masked_fill(self_pairs, -math.inf)
        log_density = torch.logsumexp(logits, dim=1) - math.log(n - 1)
        return log_density.mean()
