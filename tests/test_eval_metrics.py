"""Metrics and probes of pathfm.eval against scikit-learn on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier

from pathfm.backbone.embedding_stats import rankme, uniformity
from pathfm.eval.metrics import classification_metrics, mean_and_spread
from pathfm.eval.probes import choose_c, knn_probe, linear_probe, run_probe


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    y_true = rng.integers(0, k, 40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, k + 1, 40))  # includes an unseen class
    if seed % 2:
        y_true[y_true == 0] = 1  # a class absent from y_true but predicted
    got = classification_metrics(y_true, y_pred, n_classes=k + 1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)


def test_metrics_known_values():
    # 3 of class 0 (all right), 1 of class 1 (wrong): accuracy 3/4, balanced (1 + 0)/2
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0], n_classes=2)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 * 3 / (4 + 3) + 0.0) / 2)
    assert mean_and_spread([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert mean_and_spread([0.5]) == (0.5, 0.0)


def test_rankme_and_uniformity_known_values():
    assert rankme(np.eye(8)) == pytest.approx(8.0, rel=1e-5)  # 8 equal singular values
    rank_one = np.outer(np.arange(1, 11), np.ones(5))
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-3)
    # two antipodal points: ||a-b||^2 = 4, log exp(-2*4) = -8; identical points: log 1 = 0
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    assert uniformity(np.array([[1.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    spread, collapsed = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) * 0.01 + 1.0
    assert uniformity(spread) < uniformity(collapsed)
    assert rankme(spread) > rankme(collapsed)


def test_uniform_knn_matches_sklearn_cosine():
    rng = np.random.default_rng(1)
    x_train, x_test = rng.normal(size=(60, 12)), rng.normal(size=(25, 12))
    y_train = rng.integers(0, 4, 60)
    ours = knn_probe(x_train, y_train, x_test, n_classes=4, k=7, weighting="uniform").y_pred
    ref = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute").fit(x_train, y_train).predict(x_test)
    np.testing.assert_array_equal(ours, ref)


def test_knn_k_is_capped_by_training_size():
    x = np.eye(3)
    res = knn_probe(x, np.array([0, 1, 2]), x, n_classes=3, k=20)
    assert res.info["k"] == 3
    np.testing.assert_array_equal(res.y_pred, [0, 1, 2])  # DINO weighting: the identical neighbour dominates


def test_linear_probe_learns_and_selects_c_on_training_data_only():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 20)) * 3
    y = np.repeat(np.arange(3), 30)
    x = centers[y] + rng.normal(size=(90, 20))
    tr, te = np.arange(0, 90, 2), np.arange(1, 90, 2)
    res = linear_probe(x[tr], y[tr], x[te], seed=0)
    assert classification_metrics(y[te], res.y_pred)["balanced_accuracy"] > 0.9
    assert res.info["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    # pure-noise labels: the selection prefers the strongest regularisation tie-break, and stays deterministic
    noise = rng.integers(0, 3, 90)
    assert choose_c(x, noise, None, seed=0) == choose_c(x, noise, None, seed=0)


@pytest.mark.parametrize("probe", ["linear", "knn", "torch_linear"])
def test_probes_are_seeded(probe):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 8)), np.repeat(np.arange(4), 10)
    a = run_probe(probe, x[:30], y[:30] % 4, x[30:], n_classes=4, seed=5).y_pred
    b = run_probe(probe, x[:30], y[:30] % 4, x[30:], n_classes=4, seed=5).y_pred
    np.testing.assert_array_equal(a, b)


def test_row_space_logreg_is_exact():
    """Fitting in the span of the training rows (n < d) gives the same predictions as on all dims."""
    from sklearn.linear_model import LogisticRegression

    from pathfm.eval.probes import _row_space, _standardise

    rng = np.random.default_rng(4)
    y = np.arange(40) % 4
    x = rng.normal(size=(40, 300)) + 0.5 * np.eye(4)[y] @ rng.normal(size=(4, 300))
    xtr, xte = _standardise(x[:30], x[30:])
    a, b = _row_space(xtr, xte)
    assert a.shape[1] <= 30
    fit = lambda u: LogisticRegression(C=0.1, tol=1e-10, max_iter=10000).fit(u, y[:30])  # noqa: E731
    np.testing.assert_allclose(fit(a).predict_proba(b), fit(xtr).predict_proba(xte), atol=1e-6)
