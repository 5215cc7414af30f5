"""Classification metrics and their aggregation over folds (label-free embedding statistics:
:mod:`pathfm.backbone.embedding_stats`).

Pure numpy functions (tested against scikit-learn on known inputs).

* balanced accuracy = mean over the classes present in ``y_true`` of the per-class recall
  (Brodersen et al. 2010; scikit-learn's ``balanced_accuracy_score`` without adjustment);
* macro-F1 = unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``
  (a class with no true and no predicted sample is absent, as in scikit-learn);
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
