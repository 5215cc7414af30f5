"""Label-free statistics of a backbone's embeddings, used by training's health diagnostics and by evaluation.

Pure numpy functions (tested on known inputs).

* RankMe (Garrido et al., ICML 2023): ``exp(H(p))`` with ``p_k = s_k / sum(s) + eps`` the normalised
  singular values of the embedding matrix -- an effective rank, high when the embedding is not collapsed;
* uniformity (Wang & Isola, ICML 2020): ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` on L2-normalised
  embeddings, t = 2; lower (more negative) is more uniform on the sphere.
"""

from __future__ import annotations

import numpy as np


def rankme(features: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe effective rank ``exp(-sum p_k log p_k)``, ``p_k = s_k/||s||_1 + eps`` (Garrido et al. 2023)."""
    z = np.asarray(features, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got {z.shape}")
    s = np.linalg.svd(z, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s / total + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def uniformity(features: np.ndarray, t: float = 2.0) -> float:
    """Wang & Isola (2020) uniformity ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` of L2-normalised rows."""
    z = np.asarray(features, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"uniformity needs at least two rows, got {z.shape}")
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    sq = np.clip(2.0 - 2.0 * z @ z.T, 0.0, None)  # ||a-b||^2 = 2 - 2 a.b on the unit sphere
    iu = np.triu_indices(z.shape[0], k=1)
    x = -t * sq[iu]
    m = x.max()
    return float(m + np.log(np.mean(np.exp(x - m))))


def embedding_diagnostics(features: np.ndarray) -> dict[str, float]:
    """Label-free signals of an embedding: RankMe and uniformity (cheap in-training proxies)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: BLAS threads only contend
        return {"rankme": rankme(features), "uniformity": uniformity(features)}
