"""The blur kernel of the augmentation: PIL's ``ImageFilter.GaussianBlur(radius=sigma)``, which is not a
sampled Gaussian but three passes of an "extended" box blur (Gwosdek et al., "Theoretical foundations of
Gaussian convolution by extended box filtering", SSVM 2011) with the box radius chosen so that the three
passes have variance sigma^2 (Pillow, src/libImaging/BoxBlur.c)::

    s2 = sigma^2 / 3,  l = floor((sqrt(12 s2 + 1) - 1) / 2),
    r  = l + (2l + 1)(l(l + 1) - 3 s2) / (6 (s2 - (l + 1)^2))
    box(o) = 1 / (2r + 1) for |o| <= l,  (r - l) / (2r + 1) for |o| = l + 1

PIL runs the box three times along x, then three times along y, replicating edge pixels and rounding
to 8 bits after each pass. The OpenCV CPU path (:func:`pathfm.data.opencv_ops.gaussian_blur`) runs the
same six passes and matches PIL except at rounding ties (measured: identical for most sigma, mean
<= 0.54 level at sigma = 1.0 where the weights are dyadic); the device path multiplies the three
edge-replicating box matrices in float32 (no rounding). The box passes matter: at sigma < 0.2 a sampled
Gaussian leaves 8-bit pixels unchanged where PIL's blur does not.
"""

from __future__ import annotations

import math

import numpy as np

PASSES = 3


def box_radius(sigma: float) -> float:
    """The extended box radius r of one of the three passes (Pillow's ``_gaussian_blur_radius``)."""
    s2 = sigma * sigma / PASSES
    big = math.sqrt(12.0 * s2 + 1.0)
    low = math.floor((big - 1.0) / 2.0)
    a = (2 * low + 1) * (low * (low + 1) - 3 * s2) / (6 * (s2 - (low + 1) ** 2))
    return low + a


def box_kernel(sigma: float) -> np.ndarray:
    """The 1-D extended box (length 2 l + 3, sums to 1, float64) of one pass of GaussianBlur(radius=sigma)."""
    r = box_radius(sigma)
    low = int(r)
    box = np.full(2 * low + 3, 1.0 / (2 * r + 1))
    box[0] = box[-1] = (r - low) / (2 * r + 1)
    return box
