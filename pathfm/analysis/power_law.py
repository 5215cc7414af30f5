"""The saturating power law of data-efficiency curves, ``y = a - b * x**(-c)`` (Hestness et al. 2017; Kaplan et
al. 2020): a bounded least-squares fit (variable projection over the exponent on a grid, polished with
``scipy.optimize.curve_fit``), bootstrap CIs of the asymptote and the exponent, the data size needed to reach
a target, and a held-out-largest-point check of the extrapolation. Pure numpy/scipy; the curves themselves
(assembly from results, plotting) are :mod:`pathfm.analysis.curve`.

A 3-parameter law needs at least 4 distinct x values to leave a residual; with fewer the fit is reported
as under-determined.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from pathfm.analysis.stats import percentile_ci, t_interval

MIN_DISTINCT_X = 4


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Saturating power law ``a - b * x**(-c)``: ``a`` the asymptote, ``c`` the exponent."""
    return a - b * np.power(x, -c)


@dataclass
class PowerLawFit:
    """Result of :func:`fit_power_law`. ``status``: ok | under-determined | failed."""

    status: str
    message: str = ""
    a: float = math.nan
    b: float = math.nan
    c: float = math.nan
    a_ci: tuple[float, float] = (math.nan, math.nan)
    c_ci: tuple[float, float] = (math.nan, math.nan)
    boot: np.ndarray | None = field(default=None, repr=False)  # (n_ok, 3) bootstrap (a, b, c)
    n_points: int = 0
    n_distinct_x: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return power_law(np.asarray(x, dtype=float), self.a, self.b, self.c)

    def band(self, x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the bootstrap curves at ``x``."""
        if self.boot is None or len(self.boot) < 2:
            return np.full_like(x, np.nan, dtype=float), np.full_like(x, np.nan, dtype=float)
        curves = power_law(x[None, :], self.boot[:, :1], self.boot[:, 1:2], self.boot[:, 2:3])
        return percentile_ci(curves, level, axis=0)

    def x_for(self, target: float, level: float = 0.95) -> tuple[float, float, float]:
        """Data size where the curve reaches ``target`` (inf if the asymptote is below it), with CI."""

        def solve(a, b, c):
            if target >= a:
                return math.inf
            if b <= 0:
                return 0.0
            return float((b / (a - target)) ** (1.0 / c))

        point = solve(self.a, self.b, self.c) if self.ok else math.nan
        if self.boot is None or len(self.boot) < 2:
            return point, math.nan, math.nan
        xs = np.array([solve(*p) for p in self.boot])
        lo, hi = np.quantile(xs, [(1 - level) / 2, 1 - (1 - level) / 2], method="inverted_cdf")  # inf-safe
        return point, float(lo), float(hi)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("boot")
        return d


C_GRID = np.linspace(1e-3, 3.0, 601)  # exponent grid of the variable-projection fit


def _ab_from_sums(Sw, Sv, Svv, Sy, Syy, Svy, a_lo, a_hi):
    """Weighted least squares of ``y = a - b v`` from its sufficient sums, with ``b >= 0`` and
    ``a`` clamped to [a_lo, a_hi] (then ``b`` re-solved); returns (a, b, sse), all broadcast."""
    with np.errstate(invalid="ignore", divide="ignore"):
        den = Sw * Svv - Sv**2
        z = np.where(den > 1e-300, (Sw * Svy - Sv * Sy) / den, 0.0)  # y = a + z v, z = -b
        b = np.maximum(-z, 0.0)
        a = (Sy + b * Sv) / Sw
        clamped = (a < a_lo) | (a > a_hi)
        a = np.clip(a, a_lo, a_hi)
        b = np.where(clamped, np.maximum((a * Sv - Svy) / np.maximum(Svv, 1e-300), 0.0), b)
        sse = Syy - 2 * a * Sy + 2 * b * Svy + a**2 * Sw - 2 * a * b * Sv + b**2 * Svv
    return a, b, sse


def _fit_batch(u: np.ndarray, Y: np.ndarray, W: np.ndarray, a_lo: float, a_hi: float) -> np.ndarray:
    """Fit ``y = a - b u^-c`` to B weighted data sets at once by variable projection (Golub & Pereyra
    1973): for each ``c`` on a grid the optimal (a, b) is closed-form, the best grid ``c`` is refined by
    a parabola through its neighbours. ``Y``, ``W``: (B, n) responses and case weights (bootstrap
    counts). Returns (B, 3) = (a, b_u, c) in the scaled ``u`` coordinates."""
    # sufficient statistics per distinct u: the sums below then run over K distinct sizes, not n points
    uk, inv = np.unique(u, return_inverse=True)
    M = np.zeros((u.size, uk.size))
    M[np.arange(u.size), inv] = 1.0
    WY = W * Y
    Wk, WYk, WYYk = W @ M, WY @ M, (WY * Y) @ M  # (B, K)
    W, WY, u = Wk, WYk, uk
    V = u[None, :] ** (-C_GRID[:, None])  # (G, K)
    Sw, Sy, Syy = W.sum(1)[:, None], WY.sum(1)[:, None], WYYk.sum(1)[:, None]
    Sv, Svv, Svy = W @ V.T, W @ (V**2).T, WY @ V.T  # (B, G)
    _, _, sse = _ab_from_sums(Sw, Sv, Svv, Sy, Syy, Svy, a_lo, a_hi)
    k = np.clip(np.argmin(sse, axis=1), 1, C_GRID.size - 2)
    rows = np.arange(len(k))
    s0, s1, s2 = sse[rows, k - 1], sse[rows, k], sse[rows, k + 1]
    h = C_GRID[1] - C_GRID[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        curv = s0 - 2 * s1 + s2
        shift = np.where(curv > 0, 0.5 * h * (s0 - s2) / curv, 0.0)
    c = C_GRID[k] + np.clip(shift, -h, h)
    best_k = np.argmin(sse, axis=1)
    c = np.where((best_k == 0) | (best_k == C_GRID.size - 1), C_GRID[best_k], c)  # at a bound: keep it
    v = u[None, :] ** (-c[:, None])  # (B, n)
    a, b, _ = _ab_from_sums(Sw[:, 0], (W * v).sum(1), (W * v * v).sum(1), Sy[:, 0], Syy[:, 0], (WY * v).sum(1), a_lo, a_hi)
    return np.column_stack([a, b, c])


def _polish(u: np.ndarray, y: np.ndarray, p0: np.ndarray, a_lo: float, a_hi: float) -> np.ndarray:
    """Refine the grid solution with bounded nonlinear least squares (scipy ``curve_fit``, TRF)."""
    from scipy.optimize import curve_fit

    lo, hi = np.array([a_lo, 0.0, C_GRID[0]]), np.array([a_hi, np.inf, C_GRID[-1]])
    start = np.clip(p0, lo + 1e-12, np.where(np.isfinite(hi), hi - 1e-12, p0 + 1.0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = curve_fit(power_law, u, y, p0=start, bounds=(lo, hi), maxfev=2000)
    except (RuntimeError, ValueError):
        return p0
    sse = lambda q: float(np.sum((y - power_law(u, *q)) ** 2))  # noqa: E731
    return p if sse(p) <= sse(p0) else p0


def fit_power_law(
    x: Sequence[float],
    y: Sequence[float],
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    a_max: float | None = None,
) -> PowerLawFit:
    """Fit ``y = a - b x^-c`` to all (x, y) points (replicates included) with bootstrap CIs.

    Bounds: ``a`` in [min y, a_max] (default: 1 for scores in [0, 1], else max y + 3 x range), ``b >= 0``,
    ``c`` in [0.001, 3]. The bootstrap resamples replicates within each x (stratified) when some x has
    several, else residuals.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    ux = np.unique(x)
    res = PowerLawFit(status="ok", n_points=int(x.size), n_distinct_x=int(ux.size))
    if ux.size < MIN_DISTINCT_X:
        res.status = "under-determined"
        res.message = (f"{ux.size} distinct x value(s); a 3-parameter power law needs >= {MIN_DISTINCT_X} "
                       "(add data sizes to the sweep)")
        return res
    if a_max is None:
        span = float(y.max() - y.min())
        a_max = 1.0 if (y.min() >= 0 and y.max() <= 1) else float(y.max() + 3 * span)
    x0 = float(ux[0])
    u = x / x0  # conditioning: u >= 1
    a_lo, a_hi = float(y.min()), max(float(a_max), float(y.max()) + 1e-9)
    pu = _fit_batch(u, y[None, :], np.ones((1, y.size)), a_lo, a_hi)[0]
    if not np.isfinite(pu).all():
        res.status, res.message = "failed", "least squares did not converge"
        return res
    pu = _polish(u, y, pu, a_lo, a_hi)
    p = np.array([pu[0], pu[1] * x0 ** pu[2], pu[2]])
    res.a, res.b, res.c = (float(v) for v in p)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(x == v) for v in ux]
    stratified = any(g.size > 1 for g in groups)
    if stratified:  # resample replicates within each x: bootstrap counts as case weights
        W = np.zeros((n_boot, y.size))
        for g in groups:
            draws = g[rng.integers(0, g.size, size=(n_boot, g.size))]
            np.add.at(W, (np.repeat(np.arange(n_boot), g.size), draws.ravel()), 1.0)
        Y = np.broadcast_to(y, W.shape)
    else:  # one point per x: resample residuals
        fitted = power_law(x, *p)
        resid = y - fitted
        Y = fitted[None, :] + resid[rng.integers(0, y.size, size=(n_boot, y.size))]
        W = np.ones_like(Y)
    bu = _fit_batch(u, np.asarray(Y), W, a_lo, a_hi) if n_boot > 0 else np.zeros((0, 3))
    bu = bu[np.isfinite(bu).all(1)]
    boots = np.column_stack([bu[:, 0], bu[:, 1] * x0 ** bu[:, 2], bu[:, 2]]) if len(bu) else bu
    if len(boots) >= 2:
        res.boot = boots
        alo, ahi = percentile_ci(res.boot[:, 0], level)
        clo, chi = percentile_ci(res.boot[:, 2], level)
        res.a_ci, res.c_ci = (float(alo), float(ahi)), (float(clo), float(chi))
    return res


@dataclass
class HoldoutCheck:
    """Fit without the largest x, predict it, compare with what was measured there (``covered``: the
    error lies within the combined 95 % uncertainty of the prediction and of the observed mean)."""

    x: float
    observed: float
    predicted: float
    pred_lo: float
    pred_hi: float
    error: float
    covered: bool


def holdout_check(x: np.ndarray, y: np.ndarray, n_boot: int = 100, level: float = 0.95, seed: int = 0) -> HoldoutCheck | None:
    """Extrapolation check; ``None`` when fewer than MIN_DISTINCT_X + 1 distinct x values."""
    ux = np.unique(x)
    if ux.size < MIN_DISTINCT_X + 1:
        return None
    last = ux[-1]
    fit = fit_power_law(x[x < last], y[x < last], n_boot=n_boot, level=level, seed=seed)
    if not fit.ok:
        return None
    pred = float(fit.predict(last))
    lo, hi = fit.band(np.array([last]), level)
    obs, olo, ohi, _ = (float(v) for v in t_interval(y[x == last], level))
    # covered: the error is within the combined half-widths of the prediction band and the observed
    # mean's CI (independent errors add in quadrature); the observed CI is 0 with a single replicate
    half_pred = (hi[0] - lo[0]) / 2
    half_obs = (ohi - olo) / 2 if math.isfinite(olo) else 0.0
    covered = bool(np.isfinite(half_pred) and abs(pred - obs) <= math.hypot(half_pred, half_obs))
    return HoldoutCheck(float(last), obs, pred, float(lo[0]), float(hi[0]), pred - obs, covered)
