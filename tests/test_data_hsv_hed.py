"""HSV tissue filter (OpenCV units) and HED stain augmentation (Tellez): correctness on real tiles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pathfm.config import TissueFilterConfig
from pathfm.data.hed import HEDParams, hed_augment, hed_augment_reference, sample_hed_params
from pathfm.data.hsv import HSVBox, HSVFilter


def _tile(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def tissue_tiles(samples):
    d = samples / "tissue_tiles"
    return {p.stem: _tile(p) for p in sorted(d.glob("*.png"))}


BOXES = [HSVBox(), HSVBox(h_min=91, h_max=179), HSVBox(10, 100, 30, 200, 50, 200), HSVBox(0, 0, 0, 255, 0, 255)]


@pytest.fixture(scope="module")
def all_colours() -> np.ndarray:
    """A 4096 x 4096 RGB image holding each of the 2**24 colours once: pixel i = (i & 255, i >> 8 & 255, i >> 16)."""
    i = np.arange(1 << 24, dtype=np.uint32)
    img = np.empty((1 << 24, 3), dtype=np.uint8)
    img[:, 0], img[:, 1], img[:, 2] = i & 0xFF, (i >> 8) & 0xFF, i >> 16
    return img.reshape(4096, 4096, 3)


@pytest.fixture(scope="module")
def all_colours_hsv(all_colours) -> np.ndarray:
    """OpenCV's HSV levels of :func:`all_colours`, (2**24, 3) int32 (used only to pick colours near the box)."""
    return cv2.cvtColor(all_colours, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)


def _opencv_in_box(rgb: np.ndarray, box: HSVBox) -> np.ndarray:
    """What a user writes: cvtColor(RGB2HSV) + inRange with the inclusive bounds."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return cv2.inRange(hsv, (box.h_min, box.s_min, box.v_min), (box.h_max, box.s_max, box.v_max)) > 0


@pytest.mark.parametrize("box", BOXES, ids=str)
def test_filter_equals_opencv_on_all_colours(all_colours, box):
    flt = HSVFilter(box, 0.5)
    ref = _opencv_in_box(all_colours, box)
    assert np.array_equal(flt.mask(all_colours), ref)
    assert flt.fraction(all_colours) == np.count_nonzero(ref) / ref.size
    if box == HSVBox():  # alpha is ignored
        rgba = np.concatenate([all_colours, np.zeros(all_colours.shape[:2] + (1,), np.uint8)], axis=2)
        assert np.array_equal(flt.mask(rgba), ref)


def _possible_levels(x: np.ndarray, eps: float, period: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two integer levels a value may round to when the rounding may err by up to ``eps``."""
    lo, hi = np.floor(x - eps + 0.5), np.floor(x + eps + 0.5)
    return (lo % period, hi % period) if period else (lo, hi)


@pytest.mark.parametrize("box", BOXES[:3], ids=str)
def test_filter_matches_float_hsv_at_box_edges(all_colours, all_colours_hsv, box):
    """Independent reference: skimage's float64 rgb2hsv, scaled to OpenCV units (H = degrees / 2, S and V
    x 255) and rounded to the nearest level, on every colour within 2 levels of a face of the box. OpenCV
    rounds with fixed-point tables, so a value within ``eps`` of a half-integer may round either way
    (measured: <= 0.14 for H, <= 0.022 for S); colours where that decides the answer are left out."""
    from skimage.color import rgb2hsv

    h, s, v = all_colours_hsv.T
    dh = lambda e: np.minimum((h - e) % 180, (e - h) % 180)  # noqa: E731 - circular distance
    near = (
        (dh(box.h_min) <= 2) | (dh(box.h_max) <= 2) | (np.abs(s - box.s_min) <= 2) | (np.abs(s - box.s_max) <= 2)
        | (np.abs(v - box.v_min) <= 2) | (np.abs(v - box.v_max) <= 2)
    )
    rgb = all_colours.reshape(-1, 3)[near]
    ref = rgb2hsv(rgb[None])[0] * [180.0, 255.0, 255.0]
    decided, verdict = np.ones(len(rgb), bool), np.ones(len(rgb), bool)
    for x, eps, period, (a, b) in ((ref[:, 0], 0.15, 180, (box.h_min, box.h_max)),
                                   (ref[:, 1], 0.05, None, (box.s_min, box.s_max)),
                                   (ref[:, 2], 1e-6, None, (box.v_min, box.v_max))):
        in_lo, in_hi = ((a <= q) & (q <= b) for q in _possible_levels(x, eps, period))
        decided &= in_lo == in_hi
        verdict &= in_lo
    ours = HSVFilter(box).mask(rgb[None])[0]
    assert decided.sum() > 500_000 and decided.mean() > 0.9, (decided.sum(), decided.mean())
    assert 0.05 < verdict[decided].mean() < 0.95  # both sides of the faces are represented
    mismatch = np.flatnonzero(decided & (ours != verdict))
    assert mismatch.size == 0, [(tuple(rgb[i]), tuple(ref[i].round(3)), bool(ours[i])) for i in mismatch[:5]]


def test_filter_input_handling(tissue_tiles):
    flt = HSVFilter()
    tile = next(iter(tissue_tiles.values()))
    ref = flt.mask(tile)
    rgba = np.concatenate([tile, np.full(tile.shape[:2] + (1,), 255, np.uint8)], axis=2)
    ro = tile.copy()
    ro.flags.writeable = False  # np.asarray of a PIL image is read-only
    for t in (rgba, rgba[..., :3], ro, tile[::-1]):
        m = flt.mask(t)
        assert m.dtype == bool and m.shape == tile.shape[:2]
        assert np.array_equal(m, ref[::-1] if t.base is tile else ref)
    assert flt.fraction(tile) == pytest.approx(ref.mean())
    for bad in (tile.astype(np.float32), tile[..., 0], tile[..., :2]):
        with pytest.raises(ValueError):
            flt.mask(bad)
    with pytest.raises(ValueError):
        HSVFilter(HSVBox(v_max=256))


def _shift(mask: np.ndarray, op) -> np.ndarray:
    """Cross-shaped radius-1 dilation (op = or) / erosion (op = and), neighbours outside the image ignored."""
    out = mask.copy()
    out[1:] = op(out[1:], mask[:-1]); out[:-1] = op(out[:-1], mask[1:])
    out[:, 1:] = op(out[:, 1:], mask[:, :-1]); out[:, :-1] = op(out[:, :-1], mask[:, 1:])
    return out


def test_thumbnail_mask_is_hsv_box_then_closing_and_opening(tissue_tiles):
    from pathfm.data.tissue import thumbnail_tissue

    rng = np.random.default_rng(3)
    flt = HSVFilter()
    images = [*tissue_tiles.values(), rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
              rng.integers(0, 256, (1, 9, 3), dtype=np.uint8)]
    for img in images:
        m = flt.mask(img)
        closed = _shift(_shift(m, np.logical_or), np.logical_and)
        ref = _shift(_shift(closed, np.logical_and), np.logical_or)
        out = thumbnail_tissue(img, flt)
        assert out.dtype == bool and np.array_equal(out, ref)


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
