"""Macenko stain augmentation: per image, the H&E stain matrix and concentrations (Macenko et al., "A method
for normalizing histology slides for quantitative analysis", ISBI 2009) are extracted with torchstain
(``torchstain.numpy.augmentors.NumpyMacenkoAugmentor.fit``; optional extra ``pathfm[stain]``), and the
concentrations are perturbed as torchstain's ``MacenkoAugmentor.augment`` does:

    OD = -ln((I + 1) / Io)                         Io = 240, torchstain's default
    OD ~ HE @ C                                    HE (3, 2) stain matrix, C (2, N) concentrations, per image
    C' = alpha * C + beta,   alpha_s ~ U(1 - sigma, 1 + sigma),  beta_s ~ U(-sigma, sigma)   per stain s

Unlike torchstain, which rebuilds the image as ``Io exp(-HE @ C')`` (dropping the part of OD that two
stains do not explain and saturating the background at Io), the change is added to the image's own OD:

    I' = (I + 1) exp(-HE @ (C' - C)) - 1

so sigma = 0 is exactly the identity and the residual (the DAB/third direction, JPEG noise) survives.
torchstain's default sigma is 0.2 for both alpha and beta; here one strength sets both.

An image with fewer than :data:`MIN_TISSUE_PIXELS` stained pixels (every channel's OD >= 0.15, torchstain's
transparency threshold) has no stain matrix to speak of and is returned unchanged.
"""

from __future__ import annotations

import numpy as np

from pathfm.errors import ConfigError

IO = 240.0
OD_THRESHOLD = 0.15
MIN_TISSUE_PIXELS = 64


def require_torchstain():
    """The torchstain module, or a ConfigError saying how to install it (checked when the augmentation is built)."""
    try:
        import torchstain.numpy.augmentors as augmentors
    except ImportError as e:
        raise ConfigError("data.stain_aug.method=macenko needs torchstain: pip install 'pathfm[stain]' "
                          f"(torchstain==1.4.1), or choose another data.stain_aug.method ({e})") from None
    return augmentors


def macenko_decompose(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(HE (3, 2), C (2, H*W)) of a uint8 RGB image with torchstain's Macenko fit; None when the image has
    fewer than :data:`MIN_TISSUE_PIXELS` stained pixels."""
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / IO)
    if int(np.count_nonzero(np.all(od >= OD_THRESHOLD, axis=1))) < MIN_TISSUE_PIXELS:
        return None
    fitter = require_torchstain().NumpyMacenkoAugmentor()
    fitter.fit(rgb, Io=IO, beta=OD_THRESHOLD)
    return np.asarray(fitter.HERef, np.float64), np.asarray(fitter.CRef, np.float64)


def macenko_reconstruct(he: np.ndarray, conc: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Io exp(-HE @ C) as a float64 RGB image of ``shape`` (torchstain's reconstruction, unclipped)."""
    return (IO * np.exp(-(he @ conc))).T.reshape(shape)


def sample_macenko_params(rng: np.random.Generator, sigma: float) -> tuple[float, float, float, float]:
    """(alpha_H, alpha_E, beta_H, beta_E); always four uniforms from ``rng``, sigma = 0 gives (1, 1, 0, 0)."""
    if sigma < 0:
        raise ValueError(f"Macenko sigma must be >= 0, got {sigma}")
    u = rng.random(4)
    return (float(1 + sigma * (2 * u[0] - 1)), float(1 + sigma * (2 * u[1] - 1)),
            float(sigma * (2 * u[2] - 1)), float(sigma * (2 * u[3] - 1)))


def macenko_augment(rgb: np.ndarray, params: tuple[float, float, float, float]) -> np.ndarray:
    """The perturbation of the module docstring on a uint8 RGB image; a new uint8 image of the same shape
    (rounded, clipped). Identity parameters, or an image without enough stained pixels, give an exact copy."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    alpha, beta = np.asarray(params[:2]), np.asarray(params[2:])
    if np.all(alpha == 1) and np.all(beta == 0):
        return rgb.copy()
    fit = macenko_decompose(rgb)
    if fit is None:
        return rgb.copy()
    he, conc = fit
    delta_od = he @ ((alpha - 1)[:, None] * conc + beta[:, None])  # (3, N)
    out = (rgb.reshape(-1, 3).astype(np.float64) + 1.0) * np.exp(-delta_od.T) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape)
