"""HSV tissue filter (OpenCV units) and HED stain augmentation (Tellez): correctness on real tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pathfm.config import TissueFilterConfig
from pathfm.data.hed import HEDParams, hed_augment, hed_augment_reference, sample_hed_params
from pathfm.data.hsv import HSVBox, HSVFilter, rgb_to_hsv_opencv


def _tile(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def tissue_tiles(samples):
    d = samples / "tissue_tiles"
    return {p.stem: _tile(p) for p in sorted(d.glob("*.png"))}


def test_hsv_matches_skimage_in_opencv_units():
    from skimage.color import rgb2hsv

    rgb = np.random.default_rng(0).integers(0, 256, (50_000, 3), dtype=np.uint8)
    ours = rgb_to_hsv_opencv(rgb).astype(float)
    ref = rgb2hsv(rgb[None])[0] * [180, 255, 255]
    dh = np.abs(ours[:, 0] - ref[:, 0])
    dh = np.minimum(dh, 180 - dh)  # hue is circular
    assert dh.max() <= 1.0 and np.abs(ours[:, 1:] - ref[:, 1:]).max() <= 1.0
    assert ours[:, 0].max() <= 179  # OpenCV's 8-bit hue range is 0..179


def test_lut_filter_equals_direct_box_test(tissue_tiles):
    box = HSVBox()
    with_lut, without = HSVFilter(box, 0.6, use_lut=True), HSVFilter(box, 0.6, use_lut=False)
    for tile in tissue_tiles.values():
        direct = box.contains(rgb_to_hsv_opencv(tile))
        rgba = np.concatenate([tile, np.full(tile.shape[:2] + (1,), 255, np.uint8)], axis=2)
        for flt in (with_lut, without):
            assert np.array_equal(flt.mask(tile), direct)
            assert flt.fraction(rgba) == pytest.approx(direct.mean())
            assert flt.fraction(tile) == pytest.approx(direct.mean())
    assert without._lut is None


def test_filter_builds_its_table_only_after_enough_pixels(tissue_tiles):
    from pathfm.data import hsv

    box = HSVBox(h_min=91)  # a box no other test builds a table for
    hsv._LUTS.pop(box, None)
    tiles = list(tissue_tiles.values())
    n = tiles[0].shape[0] * tiles[0].shape[1]
    flt = HSVFilter(box, 0.6, lut_after_pixels=2 * n)
    first = [flt.fraction(t) for t in tiles[:2]]
    assert flt._lut is None and flt.direct_pixels == 2 * n  # rented: classified directly
    third = flt.fraction(tiles[2])  # would pass the threshold: bought
    assert flt._lut is not None and box in hsv._LUTS
    ref = [HSVFilter(box, 0.6, use_lut=False).fraction(t) for t in tiles[:3]]
    assert first + [third] == ref
    assert HSVFilter(box, 0.6).fraction(tiles[0]) == ref[0]  # a new filter reuses the built table


def test_filter_accepts_tissue_and_rejects_background(tissue_tiles):
    flt = HSVFilter.from_config(TissueFilterConfig())
    for name, tile in tissue_tiles.items():
        ok, frac = flt.accepts(tile)
        assert ok == name.startswith("tissue"), (name, frac)


def test_every_bound_is_a_knob(tissue_tiles):
    tile = tissue_tiles["tissue-level0-4302-10273-4814-10785"]
    base = HSVFilter(HSVBox(), 0.6).fraction(tile)
    assert HSVFilter(HSVBox(h_min=170), 0.6).fraction(tile) < base
    assert HSVFilter(HSVBox(s_min=120), 0.6).fraction(tile) < base
    assert HSVFilter(HSVBox(v_max=150), 0.6).fraction(tile) < base
    strict = HSVFilter(HSVBox(), 0.999)
    assert not strict.accepts(tile)[0]
    off = HSVFilter.from_config(TissueFilterConfig(enabled=False))
    assert off.accepts(tissue_tiles["no-tissue"])[0]


def test_hed_zero_strength_is_identity_bit_for_bit(tissue_tiles):
    rng = np.random.default_rng(0)
    for tile in tissue_tiles.values():
        p = sample_hed_params(rng, 0.0)
        assert p.is_identity
        out = hed_augment(tile, p)
        assert out.dtype == np.uint8 and np.array_equal(out, tile)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.2, 1.0])
def test_hed_matches_float64_reference_within_one_level(tissue_tiles, sigma):
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for tile in [*tissue_tiles.values(), noise]:
        p = sample_hed_params(rng, sigma)
        ours = hed_augment(tile, p).astype(np.float64)
        ref = hed_augment_reference(tile, p) * 255.0
        assert np.abs(ours - ref).max() <= 1.0


def test_hed_changes_colour_and_respects_parameter_ranges(tissue_tiles):
    tile = tissue_tiles["tissue-level0-7352-11762-7864-12274"]
    rng = np.random.default_rng(2)
    for sigma in (0.05, 0.3):
        p = sample_hed_params(rng, sigma)
        assert all(1 - sigma <= a <= 1 + sigma for a in p.alpha)
        assert all(-sigma <= b <= sigma for b in p.beta)
    weak = hed_augment(tile, HEDParams((1.02, 1.0, 1.0), (0.0, 0.0, 0.0)))
    strong = hed_augment(tile, HEDParams((1.4, 1.0, 1.0), (0.0, 0.0, 0.0)))
    d_weak = np.abs(weak.astype(int) - tile).mean()
    d_strong = np.abs(strong.astype(int) - tile).mean()
    assert 0 < d_weak < d_strong
    # more haematoxylin darkens the red channel most (H absorbs red light)
    assert strong[..., 0].mean() < tile[..., 0].mean()
    with pytest.raises(ValueError):
        sample_hed_params(rng, -0.1)
