"""DINOv2 multi-crop augmentation with HED stain jitter, driven by an explicit numpy Generator.

Per crop (Oquab et al. 2023, DINOv2 ``DataAugmentationDINO``; Midnight changes in brackets):

1. RandomResizedCrop (area scale from ``global_scale``/``local_scale``, aspect ratio in [3/4, 4/3],
   bicubic) + horizontal flip [+ vertical flip: tissue has no up];
2. [HED stain jitter (Tellez), probability ``hed.p``, strength ``hed.strength``];
3. colour jitter (brightness, contrast, saturation, hue in random order) with probability
   ``color_jitter``, then grayscale with probability ``grayscale``;
4. Gaussian blur, sigma ~ U(0.1, 2.0), with probability ``blur_global1`` / ``blur_global2`` / ``blur_local``;
5. solarize (threshold 128) on global crop 2 with probability ``solarize_global2``;
6. normalise with mean = std = 0.5 [Midnight; DINOv2 used ImageNet statistics].

Blur probabilities mean what their names say. Their DEFAULTS are what DINOv2's released code ran (and
so Midnight, built on it): global crop 1 never blurred, global crop 2 with probability 0.9, local crops
0.5 -- DINOv2's ``GaussianBlur(p)`` wrapper passes ``1 - p`` to torchvision's ``RandomApply``
(facebookresearch/dinov2 PR #411). The intended 1.0 / 0.1 / 0.5 are ``pathfm.config.BLUR_INTENDED``.

Randomness: every crop gets its own child seed drawn up front, and within a crop every decision uses a
fixed slot of one uniform block, so switching one augmentation off does not move any other crop or
decision. Blur uses PIL's Gaussian (radius = sigma), not torchvision's 9-tap kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pathfm.data.hed import HEDParams, hed_augment, sample_hed_params

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, w, h) with torchvision's RandomResizedCrop algorithm (10 tries, then a centre crop
    clamped to the allowed aspect ratios)."""
    area = width * height
    for _ in range(10):
        u = rng.random(4)
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ratio = math.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * u[1])
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(u[2] * (width - w + 1))
            top = int(u[3] * (height - h + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif in_ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


@dataclass(frozen=True)
class CropRecipe:
    size: int
    scale: tuple[float, float]
    blur: float
    solarize: float


def adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate hue by ``shift`` turns (in [-0.5, 0.5]) in PIL's 8-bit HSV, as torchvision does for PIL images."""
    if shift == 0:
        return img
    h, s, v = img.convert("HSV").split()
    d = int(round(shift * 255)) % 256
    hue = h.point([(i + d) % 256 for i in range(256)])  # 8-bit hue wraps around
    return Image.merge("HSV", (hue, s, v)).convert("RGB")


def _jitter(img: Image.Image, u: np.ndarray, strength: tuple[float, float, float, float]) -> Image.Image:
    """DINOv2/torchvision ColorJitter(brightness, contrast, saturation, hue) on a PIL image: factors
    b, c, s ~ U(1 - x, 1 + x), hue ~ U(-h, h), applied in a random order; all from the 8 uniforms ``u``."""
    b, c, s, h = strength
    for op in np.argsort(u[4:8]):  # a uniformly random permutation
        if op == 0 and b > 0:
            img = ImageEnhance.Brightness(img).enhance(1 + b * (2 * u[0] - 1))
        elif op == 1 and c > 0:
            img = ImageEnhance.Contrast(img).enhance(1 + c * (2 * u[1] - 1))
        elif op == 2 and s > 0:
            img = ImageEnhance.Color(img).enhance(1 + s * (2 * u[2] - 1))
        elif op == 3 and h > 0:
            img = adjust_hue(img, h * (2 * u[3] - 1))
    return img


class MultiCrop:
    """``MultiCrop(cfg.data)(tile_uint8, rng) -> (globals, locals)``: lists of float32 arrays (3, S, S)."""

    def __init__(self, data_cfg):
        c = data_cfg.crops
        self.crops = c
        self.hed_strength = float(data_cfg.hed.strength)
        self.hed_p = float(data_cfg.hed.p)
        self.mean = float(data_cfg.normalize_mean)
        self.std = float(data_cfg.normalize_std)
        self.recipes = (
            [CropRecipe(c.global_size, tuple(c.global_scale), c.blur_global1, 0.0),
             CropRecipe(c.global_size, tuple(c.global_scale), c.blur_global2, c.solarize_global2)]
            + [CropRecipe(c.local_size, tuple(c.local_scale), c.blur_local, 0.0)] * c.n_local
        )

    @property
    def n_global(self) -> int:
        return 2

    @property
    def n_local(self) -> int:
        return self.crops.n_local

    def __call__(self, tile: np.ndarray, rng: np.random.Generator,
                 photometric: float = 1.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Global and local crops of ``tile``; ``photometric`` in [0, 1] scales the probabilities of the
        photometric augmentations (see :func:`photometric_scale`). The random draws do not depend on it."""
        seeds = rng.integers(0, 2**63 - 1, size=len(self.recipes))
        img = Image.fromarray(tile)
        out = [self.crop(img, r, np.random.default_rng(int(s)), photometric) for r, s in zip(self.recipes, seeds)]
        return out[:2], out[2:]

    def crop(self, img: Image.Image, recipe: CropRecipe, rng: np.random.Generator, photometric: float = 1.0) -> np.ndarray:
        c = self.crops
        u = rng.random(20)
        # slots: 0 hflip, 1 vflip, 2 hed apply, 3 jitter apply, 4-11 jitter, 12 gray, 13 blur, 14 sigma, 15 solarize
        left, top, w, h = random_resized_crop_box(rng, img.width, img.height, recipe.scale)
        im = img.resize((recipe.size, recipe.size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if u[0] < c.hflip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if u[1] < c.vflip:
            im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        hed = sample_hed_params(rng, self.hed_strength)
        if u[2] < self.hed_p * photometric and not hed.is_identity:
            im = Image.fromarray(hed_augment(np.asarray(im), hed))
        if u[3] < c.color_jitter * photometric:
            im = _jitter(im, u[4:12], c.jitter_strength)
        if u[12] < c.grayscale * photometric:
            im = im.convert("L").convert("RGB")
        if u[13] < recipe.blur * photometric:
            im = im.filter(ImageFilter.GaussianBlur(radius=float(0.1 + 1.9 * u[14])))
        if u[15] < recipe.solarize * photometric:
            im = ImageOps.solarize(im, threshold=128)
        return normalize(np.asarray(im), self.mean, self.std)


def photometric_scale(step: int, ramp: tuple[int, int] | None) -> float:
    """The factor on the photometric augmentation probabilities at optimizer ``step`` (stage-local):
    0 before ``ramp[0]``, linear to 1 at ``ramp[1]``, 1 after (and always 1 without a ramp).

    Why a ramp: at small scale, per-crop photometric augmentation leaves a random-init teacher's targets
    with nothing one crop can predict about another, and DINO collapses to uniform targets before it
    learns anything (docs/training-health.md)."""
    if ramp is None:
        return 1.0
    start, end = ramp
    if step >= end:
        return 1.0
    if step < start:
        return 0.0
    return (step - start) / (end - start)


def normalize(rgb: np.ndarray, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W), (x / 255 - mean) / std."""
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)
    x *= np.float32(1.0 / (255.0 * std))
    x -= np.float32(mean / std)
    return x


__all__ = ["MultiCrop", "HEDParams", "random_resized_crop_box", "normalize", "adjust_hue", "photometric_scale"]
