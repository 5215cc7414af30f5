"""iBOT block masks for the global crops (BEiT block masking with DINOv2's stratified ratios, A.6).

Of ``n_crops`` global crops, ``int(n_crops * mask_probability)`` are masked. Their target ratios are
stratified: r_i ~ U(a_i, a_{i+1}) with a = linspace(ratio_min, ratio_max, n_masked + 1), target count
int(N * r_i) for N = H * W patches. Each mask is grown from random rectangles (area ~ U(4, budget) with the
budget capped at N/2, log aspect ~ U(log 0.3, log 1/0.3), at most 10 placements per rectangle, accepted when
it adds between 1 and ``budget`` new patches); growth stops at the target or when no rectangle fits, so a
mask never exceeds its target and may undershoot it. Masked and unmasked crops are then shuffled.

Everything is drawn from the given ``numpy.random.Generator``: same generator state, same masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pathfm.errors import ConfigError

MIN_BLOCK_PATCHES = 4
MAX_BLOCK_FRACTION = 0.5
ASPECT_RANGE = (0.3, 1 / 0.3)
TRIES_PER_BLOCK = 10


def _add_block(mask: np.ndarray, budget: int, max_block: int, rng: np.random.Generator) -> int:
    """Try to mask one random rectangle adding 1..budget new patches; returns how many it added.

    The uniforms of all tries are drawn in one call (area, log aspect, top, left per try): same generator
    state, same result, and far fewer Python-level numpy calls.
    """
    height, width = mask.shape
    log_lo, log_hi = math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])
    area_lo, area_hi = sorted((MIN_BLOCK_PATCHES, min(budget, max_block)))
    for u_area, u_aspect, u_top, u_left in rng.random((TRIES_PER_BLOCK, 4)).tolist():
        area = area_lo + (area_hi - area_lo) * u_area
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_aspect)
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if 0 < h < height and 0 < w < width:
            top = int(u_top * (height - h + 1))
            left = int(u_left * (width - w + 1))
            window = mask[top : top + h, left : left + w]
            new = h * w - int(np.count_nonzero(window))
            if 0 < new <= budget:
                window[...] = True
                return new
    return 0


def block_mask(grid: tuple[int, int], n_target: int, rng: np.random.Generator) -> np.ndarray:
    """One (H, W) boolean BEiT block mask with at most ``n_target`` masked patches."""
    height, width = grid
    mask = np.zeros((height, width), dtype=bool)
    max_block = int(MAX_BLOCK_FRACTION * height * width)
    count = 0
    while count < n_target:
        added = _add_block(mask, n_target - count, max_block, rng)
        if added == 0:
            break
        count += added
    return mask


def block_masks(
    n_crops: int,
    grid: tuple[int, int],
    mask_probability: float,
    ratio: tuple[float, float],
    generator: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """Masks for ``n_crops`` global crops -> (bool (n_crops, H*W), float32 weights (n_crops,)).

    ``weights[i] = 1 / max(m_i, 1)`` with m_i the masked-patch count of crop i (the iBOT per-image weight;
    expand to per-patch weights with :func:`masked_patch_weights`).
    """
    if n_crops < 0:
        raise ValueError(f"n_crops must be >= 0, got {n_crops}")
    height, width = grid
    if height < 1 or width < 1:
        raise ValueError(f"mask grid must be positive, got {grid}")
    if not 0.0 <= mask_probability <= 1.0:
        raise ConfigError(f"loss.mask_probability must be in [0, 1], got {mask_probability}")
    lo, hi = ratio
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError(f"loss.mask_ratio must satisfy 0 <= min <= max <= 1, got {tuple(ratio)}")
    n_patches = height * width
    n_masked = int(n_crops * mask_probability)
    bounds = np.linspace(lo, hi, n_masked + 1)
    masks = np.zeros((n_crops, n_patches), dtype=bool)
    for i in range(n_masked):
        r = generator.uniform(bounds[i], bounds[i + 1])
        masks[i] = block_mask((height, width), int(n_patches * r), generator).reshape(-1)
    masks = masks[generator.permutation(n_crops)]
    out = torch.from_numpy(masks)
    weights = 1.0 / out.sum(dim=1).clamp(min=1).to(torch.float32)
    return out, weights


def masked_patch_weights(masks: Tensor, weights: Tensor) -> Tensor:
    """Per-patch weights (M,) in the row order of ``tokens.flatten(0, 1)[masks.flatten()]``."""
    return weights.unsqueeze(1).expand_as(masks)[masks]
