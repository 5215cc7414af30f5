"""The OpenCV photometric operations of the CPU path against PIL (the reference), with the tolerances
stated in pathfm/data/opencv_ops.py, and the whole opencv backend against the pil backend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pathfm.config import DataConfig
from pathfm.data import opencv_ops as ops
from pathfm.data.multicrop import MultiCrop, adjust_hue


@pytest.fixture(scope="module")
def rgb(samples):
    img = Image.open(samples / "tissue_tiles" / "tissue-level0-4302-10273-4814-10785.png").convert("RGB")
    return np.array(img)[:224, :224]


def _levels(a, b) -> np.ndarray:
    return np.abs(np.asarray(a).astype(np.int32) - np.asarray(b).astype(np.int32))


@pytest.mark.parametrize("name, ours, pil, max_tol, mean_tol", [
    ("brightness", lambda a: ops.brightness(a, 0.6), lambda im: ImageEnhance.Brightness(im).enhance(0.6), 1, 0.45),
    ("brightness_up", lambda a: ops.brightness(a, 1.4), lambda im: ImageEnhance.Brightness(im).enhance(1.4), 1, 0.45),
    ("contrast", lambda a: ops.contrast(a, 0.6), lambda im: ImageEnhance.Contrast(im).enhance(0.6), 1, 0.45),
    ("contrast_up", lambda a: ops.contrast(a, 1.4), lambda im: ImageEnhance.Contrast(im).enhance(1.4), 1, 0.45),
    ("saturation", lambda a: ops.saturation(a, 1.4), lambda im: ImageEnhance.Color(im).enhance(1.4), 1, 0.45),
    ("hue", lambda a: ops.hue(a, -0.1), lambda im: adjust_hue(im, -0.1), 5, 0.45),
    ("hue_far", lambda a: ops.hue(a, 0.3), lambda im: adjust_hue(im, 0.3), 5, 0.45),
    ("grayscale", ops.grayscale, lambda im: im.convert("L").convert("RGB"), 1, 0.01),
    ("blur", lambda a: ops.gaussian_blur(a, 1.2), lambda im: im.filter(ImageFilter.GaussianBlur(1.2)), 0, 0.0),
    ("blur_wide", lambda a: ops.gaussian_blur(a, 1.7), lambda im: im.filter(ImageFilter.GaussianBlur(1.7)), 0, 0.0),
    ("blur_tie", lambda a: ops.gaussian_blur(a, 1.0), lambda im: im.filter(ImageFilter.GaussianBlur(1.0)), 3, 0.6),
    ("solarize", ops.solarize, lambda im: ImageOps.solarize(im, threshold=128), 0, 0.0),
    ("flips", lambda a: ops.flip(a, True, True), lambda im: im.transpose(Image.Transpose.ROTATE_180), 0, 0.0),
])  # fmt: skip
def test_opencv_op_matches_pil(rgb, name, ours, pil, max_tol, mean_tol):
    out = ours(rgb)
    ref = pil(Image.fromarray(rgb))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    d = _levels(out, ref)
    assert d.max() <= max_tol and d.mean() <= mean_tol, (d.max(), d.mean())
    assert _levels(ref, rgb).mean() > 1.0  # the op changes the image by more than the tolerance


def test_opencv_backend_makes_the_same_crops_as_pil_within_tolerance(rgb):
    d = DataConfig()
    d = d.model_copy(update={"crops": d.crops.model_copy(update={"color_jitter": 1.0, "grayscale": 0.3})})
    fast, ref = MultiCrop(d), MultiCrop(d, backend="pil")
    per_crop = []
    for seed in range(4):
        a, b = fast(rgb, np.random.default_rng(seed)), ref(rgb, np.random.default_rng(seed))
        for x, y in zip(a[0] + a[1], b[0] + b[1]):
            levels = np.abs(x - y) * 127.5
            per_crop.append(levels.mean())
            assert np.percentile(levels, 99) <= 10.0
    # PIL truncates after each blend, OpenCV rounds: compounded over up to 4 jitter ops (measured over 10
    # seeds: per-crop mean <= 2.9, average 1.25 levels, OpenCV brighter by 1.1 on average)
    assert max(per_crop) <= 3.5 and np.mean(per_crop) <= 1.5
    with pytest.raises(ValueError, match="backend"):
        MultiCrop(d, backend="skimage")
