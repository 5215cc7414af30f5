"""iBOT block masks: counts, stratified ratios, per-image weights, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathfm.errors import ConfigError
from pathfm.ssl.masking import block_mask, block_masks, masked_patch_weights


def test_masked_crop_count_ratio_bounds_and_weights() -> None:
    n_crops, grid = 40, (16, 16)
    masks, weights = block_masks(n_crops, grid, 0.5, (0.1, 0.5), np.random.default_rng(0))
    assert masks.dtype == torch.bool and masks.shape == (n_crops, 256)
    assert weights.dtype == torch.float32 and weights.shape == (n_crops,)
    counts = masks.sum(dim=1)
    assert int((counts > 0).sum()) == 20  # int(40 * 0.5) crops masked, the rest untouched
    assert torch.allclose(weights, 1.0 / counts.clamp(min=1).float())
    ratios = counts[counts > 0].float() / 256
    assert float(ratios.max()) <= 0.5
    assert float(ratios.min()) >= 0.05  # undershoot is possible, but small


def test_ratios_are_stratified_over_the_range() -> None:
    """Sorted ratios of the masked crops follow the strata a_i = linspace(0.1, 0.5, n + 1)."""
    n_masked, grid = 10, (32, 32)
    masks, _ = block_masks(n_masked, grid, 1.0, (0.1, 0.5), np.random.default_rng(1))
    ratios = np.sort(masks.sum(dim=1).numpy() / (32 * 32))
    bounds = np.linspace(0.1, 0.5, n_masked + 1)
    assert np.all(ratios <= bounds[1:] + 1e-9)  # never above its stratum
    assert np.all(ratios >= bounds[:-1] - 0.05)  # at most a small undershoot
    assert ratios[-1] > 0.4 and ratios[0] < 0.15


def test_masks_are_blocks_not_scattered_patches() -> None:
    mask = block_mask((14, 14), 60, np.random.default_rng(2))
    assert 0 < mask.sum() <= 60
    # a block mask has many masked neighbours: most masked patches touch another masked patch horizontally
    horizontal_pairs = np.logical_and(mask[:, 1:], mask[:, :-1]).sum()
    assert horizontal_pairs > 0.5 * mask.sum()


def test_same_generator_state_same_masks() -> None:
    a = block_masks(8, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(3))
    b = block_masks(8, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(3))
    c = block_masks(8, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_no_masks_when_probability_zero_and_bad_ratio_rejected() -> None:
    masks, weights = block_masks(6, (7, 7), 0.0, (0.1, 0.5), np.random.default_rng(5))
    assert not masks.any() and torch.equal(weights, torch.ones(6))
    with pytest.raises(ConfigError, match="mask_ratio"):
        block_masks(6, (7, 7), 0.5, (0.6, 0.5), np.random.default_rng(5))
    with pytest.raises(ConfigError, match="mask_probability"):
        block_masks(6, (7, 7), 1.5, (0.1, 0.5), np.random.default_rng(5))


def test_masked_patch_weights_sum_to_one_per_masked_crop() -> None:
    masks, weights = block_masks(6, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(6))
    per_patch = masked_patch_weights(masks, weights)
    assert per_patch.shape == (int(masks.sum()),)
    crop_of_patch = torch.arange(6).unsqueeze(1).expand_as(masks)[masks]
    sums = torch.zeros(6).index_add_(0, crop_of_patch, per_patch)
    assert torch.allclose(sums, (masks.sum(1) > 0).float())
