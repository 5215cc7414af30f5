"""The photometric crop operations of the CPU path on uint8 RGB arrays with OpenCV.

Each is the PIL operation of :func:`pathfm.data.multicrop.apply_crop_pil` (the reference, kept for the
benchmark and the parity tests) at 3-9x less CPU time (``benchmarks/data_pipeline.py``). Measured
differences to PIL on the bundled tissue tile, in 8-bit levels (tests/test_data_opencv_ops.py checks them):

- brightness, contrast, saturation (blends): <= 1 (OpenCV rounds, PIL truncates; mean shift <= +0.41);
- grayscale: <= 1 (both ITU-R 601-2 luma in fixed point);
- hue: <= 5, mean <= 0.45 (both rotate the hue in 8-bit HSV, the conversions round differently);
- Gaussian blur: PIL's own algorithm (six extended box passes, :mod:`pathfm.data.blur`): identical but for
  rounding ties (mean <= 0.54 at sigma = 1.0, <= 0.06 elsewhere on a 0.1-step grid).
Resizing stays with PIL: its antialiased bicubic is pinned by the tests and OpenCV's INTER_CUBIC does not
antialias when shrinking.
"""

from __future__ import annotations

import cv2
import numpy as np

from pathfm.data.blur import PASSES, box_kernel


def _blend(rgb: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    """round(other + factor * (rgb - other)), saturated to 0..255."""
    if isinstance(other, float):
        return cv2.addWeighted(rgb, factor, rgb, 0.0, other * (1.0 - factor))
    return cv2.addWeighted(rgb, factor, other, 1.0 - factor, 0.0)


def gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ITU-R 601-2 luma, as PIL's convert("L")."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    return cv2.convertScaleAbs(rgb, alpha=factor)


def contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean luma rounded to an integer, as PIL's ImageEnhance.Contrast."""
    return _blend(rgb, float(int(gray(rgb).mean() + 0.5)), factor)


def saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    return _blend(rgb, grayscale(rgb), factor)


def hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` turns in 8-bit HSV (H in 0..255, as PIL's "HSV" mode)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] += np.uint8(int(round(shift * 255)) % 256)  # uint8 arithmetic wraps around
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def grayscale(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray(rgb), cv2.COLOR_GRAY2RGB)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """PIL's GaussianBlur(radius=sigma): three extended box passes along x, then three along y, each
    rounded to 8 bits, edges replicated (:mod:`pathfm.data.blur`)."""
    box = box_kernel(sigma)
    for kernel in (box[None, :],) * PASSES + (box[:, None],) * PASSES:
        rgb = cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return rgb


def solarize(rgb: np.ndarray) -> np.ndarray:
    """Values >= 128 inverted, as PIL's ImageOps.solarize(threshold=128)."""
    return np.where(rgb >= 128, 255 - rgb, rgb)


def flip(rgb: np.ndarray, horizontal: bool, vertical: bool) -> np.ndarray:
    if horizontal and vertical:
        return cv2.flip(rgb, -1)
    if horizontal or vertical:
        return cv2.flip(rgb, 1 if horizontal else 0)
    return rgb


JITTER_FUNCTIONS = (brightness, contrast, saturation, hue)  # op ids 0-3, see pathfm.data.crop_params.JITTER_OPS
