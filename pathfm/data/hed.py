"""HED colour augmentation (Tellez et al., "Whole-slide mitosis detection in H&E breast histology using
PHH3 as a reference to train distilled stain-invariant convolutional networks", IEEE TMI 2018, and
Tellez et al., MedIA 2019, arXiv 1902.06543).

Formula (per pixel, intensities I in [0, 1], eps = 1e-6, lambda = -ln(eps)):

    OD  = -ln(max(I, eps)) / lambda                    optical density, in scikit-image's scaling
    s   = OD @ HED_FROM_RGB                            stain concentrations (Ruifrok & Johnston 2001)
    s'  = alpha * s + beta,  alpha_c ~ U(1-sigma, 1+sigma), beta_c ~ U(-sigma, sigma)   per stain c
    OD' = s' @ RGB_FROM_HED
    I'  = clip(exp(-lambda * OD'), 0, 1)

The stain scaling follows scikit-image's ``rgb2hed`` so sigma means what it means in the Tellez and
OpenMidnight implementations (0.05 "light", 0.2 "strong"). Unlike ``rgb2hed`` the stains are not clipped
at 0, so the round trip is the identity and sigma = 0 returns the input bit for bit.

Fast path: the three linear steps collapse into one affine map of ln(I),

    ln I' = ln I @ M + b,   M = HED_FROM_RGB @ diag(alpha) @ RGB_FROM_HED,   b = -lambda * beta @ RGB_FROM_HED

so a tile costs a 256-entry log table, one per-pixel 3x4 affine map, one exp and a rounding cast (float32,
each one OpenCV pass: ``cv2.LUT``, ``cv2.transform``, ``cv2.exp``, ``cv2.convertScaleAbs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29],  # haematoxylin
     [0.07, 0.99, 0.11],  # eosin
     [0.27, 0.57, 0.78]],  # DAB
    dtype=np.float64,
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
EPS = 1e-6
LAMBDA = -np.log(EPS)

# ln(max(v / 255, eps)) for v = 0..255
_LOG_LUT = np.log(np.maximum(np.arange(256, dtype=np.float64) / 255.0, EPS)).astype(np.float32)


@dataclass(frozen=True)
class HEDParams:
    """Per-stain scale and shift (H, E, D)."""

    alpha: tuple[float, float, float] = (1.0, 1.0, 1.0)
    beta: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return self.alpha == (1.0, 1.0, 1.0) and self.beta == (0.0, 0.0, 0.0)


def sample_hed_params(rng: np.random.Generator, sigma: float) -> HEDParams:
    """alpha ~ U(1-sigma, 1+sigma)^3, beta ~ U(-sigma, sigma)^3; sigma = 0 gives exactly the identity
    (and still consumes the same random numbers, so the stream does not depend on sigma)."""
    if sigma < 0:
        raise ValueError(f"HED sigma must be >= 0, got {sigma}")
    u = rng.random(6)
    if sigma == 0:
        return HEDParams()
    alpha = tuple(float(1.0 + sigma * (2 * x - 1)) for x in u[:3])
    beta = tuple(float(sigma * (2 * x - 1)) for x in u[3:])
    return HEDParams(alpha, beta)  # type: ignore[arg-type]


def hed_affine(params: HEDParams) -> tuple[np.ndarray, np.ndarray]:
    """(M, b) of the collapsed map ln I' = ln I @ M + b (float64)."""
    m = (HED_FROM_RGB * np.asarray(params.alpha)) @ RGB_FROM_HED  # = HED_FROM_RGB @ diag(alpha) @ RGB_FROM_HED
    b = -LAMBDA * (np.asarray(params.beta) @ RGB_FROM_HED)
    return m, b


def hed_augment(rgb: np.ndarray, params: HEDParams) -> np.ndarray:
    """Apply HED jitter to a uint8 RGB image (H, W, 3); returns a new uint8 image (rounded, clipped;
    float32, measured within 0.5001 level of :func:`hed_augment_reference`).

    The identity parameters return an exact copy."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if params.is_identity:
        return rgb.copy()
    m, b = hed_affine(params)
    # one OpenCV pass per step: ln I from the table, the 3x4 affine map per pixel (dst_i = sum_j M[j, i]
    # src_j + b_i + ln 255, so exp(.) is 255 * I'), exp, then round and saturate to uint8
    affine = np.concatenate([m.T, (b + np.log(255.0))[:, None]], axis=1).astype(np.float32)
    log_i = cv2.LUT(np.ascontiguousarray(rgb), _LOG_LUT)
    return cv2.convertScaleAbs(cv2.exp(cv2.transform(log_i, affine)))


def hed_augment_reference(rgb: np.ndarray, params: HEDParams) -> np.ndarray:
    """Float64 step-by-step reference of the formula in the module docstring; returns I' in [0, 1]."""
    i = rgb.astype(np.float64) / 255.0
    od = -np.log(np.maximum(i, EPS)) / LAMBDA
    stains = od @ HED_FROM_RGB
    stains = stains * np.asarray(params.alpha) + np.asarray(params.beta)
    od2 = stains @ RGB_FROM_HED
    return np.clip(np.exp(-LAMBDA * od2), 0.0, 1.0)
