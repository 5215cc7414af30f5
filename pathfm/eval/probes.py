"""Probes on frozen features: each ``fit_predict(X_train, y_train, X_test, ...) -> y_pred``.

* ``linear``       -- scikit-learn multinomial logistic regression on standardised features; the inverse
                      regularisation C is chosen by balanced accuracy in an inner cross-validation on the
                      *training* fold only (grouped by case / tile, so the choice never sees the test fold);
* ``knn``          -- cosine k-nearest neighbours, k = 20 capped by the training size; votes weighted by
                      ``exp(cos / 0.07)`` as in DINO's kNN evaluation (Caron et al. 2021), or uniform;
* ``torch_linear`` -- a linear layer trained with AdamW on standardised features (close to eva's head).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from pathfm.errors import PathfmError
from pathfm.eval.metrics import classification_metrics

PROBES = ("linear", "knn", "torch_linear")
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class ProbeResult:
    y_pred: np.ndarray
    info: dict = field(default_factory=dict)


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x_train.mean(0, keepdims=True)
    sd = x_train.std(0, keepdims=True)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return (x_train - mu) / sd, (x_test - mu) / sd


def _row_space(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate into the row space of ``x_train`` when there are fewer samples than dimensions.

    For L2-regularised logistic regression the optimal weights lie in the span of the training rows
    (representer theorem), and the penalty is rotation invariant, so fitting on ``x V`` (V: right singular
    vectors, rank <= n) gives exactly the same predictions -- with n instead of d columns (30x fewer for a
    ViT-g CLS+mean embedding on a hundred tiles).
    """
    n, d = x_train.shape
    if d <= n:
        return x_train, x_test
    _, s, vt = np.linalg.svd(x_train, full_matrices=False)
    vt = vt[s > s[0] * 1e-10] if s.size and s[0] > 0 else vt
    return x_train @ vt.T, x_test @ vt.T


def _logreg(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000, tol=1e-4, random_state=seed)


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _logreg(c, seed).fit(x, y)


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, *, cs=DEFAULT_CS, n_inner: int = 3,
             seed: int = 0) -> float:
    """The C with the best mean inner-CV balanced accuracy on (x, y); ties go to the smaller C."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    k = min(n_inner, len(np.unique(groups)), int(np.bincount(y).max()))
    if k < 2 or len(cs) == 1:
        return float(cs[len(cs) // 2]) if len(cs) > 1 else float(cs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups))
    from sklearn.exceptions import ConvergenceWarning

    order = np.argsort(cs)  # ascending C with warm starts: each fit starts from the more regularised one
    scores = np.zeros(len(cs))
    for tr, va in splits:
        if len(np.unique(y[tr])) < 2:
            continue
        xtr, xva = _row_space(*_standardise(x[tr], x[va]))
        model = _logreg(1.0, seed).set_params(warm_start=True)
        for i in order:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pred = model.set_params(C=float(cs[i])).fit(xtr, y[tr]).predict(xva)
            scores[i] += classification_metrics(y[va], pred)["balanced_accuracy"]
    best = np.flatnonzero(scores == scores.max())
    return float(min(cs[i] for i in best))


def linear_probe(x_train, y_train, x_test, *, groups=None, seed: int = 0, cs=DEFAULT_CS, **_) -> ProbeResult:
    c = choose_c(x_train, y_train, groups, cs=cs, seed=seed)
    xtr, xte = _row_space(*_standardise(x_train, x_test))
    return ProbeResult(_fit_logreg(xtr, y_train, c, seed).predict(xte), {"C": c})


def knn_probe(x_train, y_train, x_test, *, n_classes: int | None = None, k: int = 20, temperature: float = 0.07,
              weighting: str = "dino", **_) -> ProbeResult:
    """Cosine kNN; ``weighting="uniform"`` is a plain majority vote (ties: the smaller class index)."""
    n_classes = int(n_classes if n_classes is not None else y_train.max() + 1)
    k = max(1, min(k, len(y_train)))
    a = x_train / np.maximum(np.linalg.norm(x_train, axis=1, keepdims=True), 1e-12)
    b = x_test / np.maximum(np.linalg.norm(x_test, axis=1, keepdims=True), 1e-12)
    sim = b @ a.T  # (n_test, n_train)
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sim, nn, axis=1)
    if weighting == "dino":
        w = np.exp((top - top.max(1, keepdims=True)) / temperature)
    elif weighting == "uniform":
        w = np.ones_like(top)
    else:
        raise PathfmError(f"kNN weighting '{weighting}' is not dino or uniform")
    votes = np.zeros((len(x_test), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(x_test)), k), y_train[nn].ravel()), w.ravel())
    return ProbeResult(votes.argmax(1), {"k": k})


def torch_linear_probe(x_train, y_train, x_test, *, n_classes: int | None = None, seed: int = 0, epochs: int = 100,
                       lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, **_) -> ProbeResult:
    """A linear layer, AdamW, cross-entropy, on standardised features (seeded; CPU)."""
    import torch

    n_classes = int(n_classes if n_classes is not None else y_train.max() + 1)
    xtr, xte = _standardise(x_train, x_test)
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(xtr.astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.int64))
    head = torch.nn.Linear(xt.shape[1], n_classes)
    with torch.no_grad():
        bound = 1.0 / np.sqrt(xt.shape[1])
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(yt), generator=g)
            for i in range(0, len(yt), batch_size):
                idx = order[i:i + batch_size]
                loss = torch.nn.functional.cross_entropy(head(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.no_grad():
        pred = head(torch.from_numpy(xte.astype(np.float32))).argmax(1).numpy()
    return ProbeResult(pred, {"epochs": epochs})


_REGISTRY = {"linear": linear_probe, "knn": knn_probe, "torch_linear": torch_linear_probe}


def check_probes(probes) -> tuple[str, ...]:
    probes = (probes,) if isinstance(probes, str) else tuple(probes)
    bad = [p for p in probes if p not in _REGISTRY]
    if bad or not probes:
        raise PathfmError(f"unknown probe(s) {bad or probes}; choose from {', '.join(PROBES)}")
    return probes


def run_probe(name: str, x_train, y_train, x_test, *, n_classes: int, groups=None, seed: int = 0) -> ProbeResult:
    from threadpoolctl import threadpool_limits

    check_probes(name)
    with threadpool_limits(limits=1, user_api="blas"):  # tiny problems: threads only add overhead (4x here)
        return _REGISTRY[name](np.asarray(x_train, np.float64), np.asarray(y_train, np.int64), np.asarray(x_test, np.float64),
                                   n_classes=n_classes, groups=groups, seed=seed)
