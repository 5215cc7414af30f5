"""Classification metrics, their aggregation over folds, and label-free embedding diagnostics.

Pure numpy functions (tested against scikit-learn on known inputs).

* balanced accuracy = mean over the classes present in ``y_true`` of the per-class recall
  (Brodersen et al. 2010; scikit-learn's ``balanced_accuracy_score`` without adjustment);
* macro-F1 = unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``
  (a class with no true and no predicted sample is absent, as in scikit-learn);
* RankMe (Garrido et al., ICML 2023): ``exp(H(p))`` with ``p_k = s_k / sum(s) + eps`` the normalised
  singular values of the embedding matrix -- an effective rank, high when the embedding is not collapsed;
* uniformity (Wang & Isola, ICML 2020): ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` on L2-normalised
  embeddings, t = 2; lower (more negative) is more uniform on the sphere.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("balanced_accuracy", "accuracy", "macro_f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> dict[str, float]:
    """Balanced accuracy, accuracy and macro-F1 of integer labels ``0..n_classes-1``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        raise ValueError("no samples to score")
    k = int(n_classes if n_classes is not None else max(y_true.max(), y_pred.max()) + 1)
    cm = confusion(y_true, y_pred, k).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = support > 0
    recall = tp[present] / support[present]
    seen = present | (predicted > 0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return {
        "balanced_accuracy": float(recall.mean()),
        "accuracy": float(tp.sum() / cm.sum()),
        "macro_f1": float(f1[seen].mean()),
    }


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


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
