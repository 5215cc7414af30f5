"""DINOv2 multi-crop augmentation with HED stain jitter, driven by an explicit numpy Generator.

Per crop (Oquab et al. 2023, DINOv2 ``DataAugmentationDINO``; Midnight changes in brackets):

1. RandomResizedCrop (area scale from ``global_scale``/``local_scale``, aspect ratio in [3/4, 4/3],
   bicubic) + horizontal flip [+ vertical flip: tissue has no up];
2. [stain augmentation, ``stain_aug.method``: HED jitter (Tellez; default), probability ``hed.p``, strength
   ``hed.strength``; or none, RandStainNA or Macenko (:mod:`pathfm.data.stain_aug`)];
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
fixed slot of one uniform block (:func:`pathfm.data.crop_params.draw_crop_params`, shared with the
device path), so switching one augmentation off does not move any other crop or decision. Blur uses PIL's
Gaussian (radius = sigma), not torchvision's 9-tap kernel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pathfm.data.crop_params import CropParams, CropRecipe, draw_crop_params, random_resized_crop_box
from pathfm.data import opencv_ops as ops
from pathfm.data.hed import HEDParams, hed_augment
from pathfm.data.stain_aug import StainAugmenter, apply_stain, hed_probability


def adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate hue by ``shift`` turns (in [-0.5, 0.5]) in PIL's 8-bit HSV, as torchvision does for PIL images."""
    if shift == 0:
        return img
    h, s, v = img.convert("HSV").split()
    d = int(round(shift * 255)) % 256
    hue = h.point([(i + d) % 256 for i in range(256)])  # 8-bit hue wraps around
    return Image.merge("HSV", (hue, s, v)).convert("RGB")


def _jitter(img: Image.Image, factors: tuple[float, float, float, float], order: tuple[int, ...]) -> Image.Image:
    """DINOv2/torchvision ColorJitter on a PIL image: brightness, contrast, saturation factors and a hue
    shift, applied in ``order`` (op ids 0-3); an identity factor is skipped."""
    for op in order:
        f = factors[op]
        if op == 0 and f != 1:
            img = ImageEnhance.Brightness(img).enhance(f)
        elif op == 1 and f != 1:
            img = ImageEnhance.Contrast(img).enhance(f)
        elif op == 2 and f != 1:
            img = ImageEnhance.Color(img).enhance(f)
        elif op == 3 and f != 0:
            img = adjust_hue(img, f)
    return img


def apply_crop_pil(img: Image.Image, p: CropParams, size: int) -> np.ndarray:
    """One crop of ``img`` with the parameters ``p``, as a uint8 (size, size, 3) array (the CPU path)."""
    left, top, w, h = p.box
    im = img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    if p.hflip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if p.vflip:
        im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if p.hed is not None:
        im = Image.fromarray(hed_augment(np.asarray(im), p.hed))
    if p.stain is not None:
        im = Image.fromarray(apply_stain(np.asarray(im), p.stain))
    if p.jitter is not None:
        im = _jitter(im, p.jitter, p.jitter_order)
    if p.grayscale:
        im = im.convert("L").convert("RGB")
    if p.blur_sigma is not None:
        im = im.filter(ImageFilter.GaussianBlur(radius=p.blur_sigma))
    if p.solarize:
        im = ImageOps.solarize(im, threshold=128)
    return np.asarray(im)


def apply_crop_opencv(img: Image.Image, p: CropParams, size: int) -> np.ndarray:
    """:func:`apply_crop_pil` with the photometric operations in OpenCV (:mod:`pathfm.data.opencv_ops`,
    which states the differences); the resized crop is PIL's."""
    left, top, w, h = p.box
    rgb = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h)))
    rgb = ops.flip(rgb, p.hflip, p.vflip)
    if p.hed is not None:
        rgb = hed_augment(rgb, p.hed)
    if p.stain is not None:
        rgb = apply_stain(rgb, p.stain)
    if p.jitter is not None:
        for op in p.jitter_order:
            f = p.jitter[op]
            if f != (0 if op == 3 else 1):  # identity factors are skipped, as in the PIL path
                rgb = ops.JITTER_FUNCTIONS[op](rgb, f)
    if p.grayscale:
        rgb = ops.grayscale(rgb)
    if p.blur_sigma is not None:
        rgb = ops.gaussian_blur(rgb, p.blur_sigma)
    if p.solarize:
        rgb = ops.solarize(rgb)
    return rgb


CROP_BACKENDS = {"opencv": apply_crop_opencv, "pil": apply_crop_pil}


class MultiCrop:
    """``MultiCrop(cfg.data)(tile_uint8, rng) -> (globals, locals)``: lists of float32 arrays (3, S, S).

    ``backend``: ``opencv`` (default; photometric operations in OpenCV) or ``pil`` (every operation in
    PIL, the reference): the same draws, pixel values within the tolerances of :mod:`pathfm.data.opencv_ops`."""

    def __init__(self, data_cfg, backend: str = "opencv"):
        if backend not in CROP_BACKENDS:
            raise ValueError(f"MultiCrop backend {backend!r}: expected one of {sorted(CROP_BACKENDS)}")
        self.apply_crop = CROP_BACKENDS[backend]
        c = data_cfg.crops
        self.crops = c
        self.hed_strength = float(data_cfg.hed.strength)
        self.hed_p = hed_probability(data_cfg)
        self.stain_aug = StainAugmenter.from_config(data_cfg)
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

    def draw(self, rng: np.random.Generator, tile_width: int, tile_height: int,
             photometric: float = 1.0) -> list[CropParams]:
        """The parameters of every crop of one sample (globals first): each crop gets its own child seed
        drawn up front, so one crop's draws never move another's."""
        seeds = rng.integers(0, 2**63 - 1, size=len(self.recipes))
        return [draw_crop_params(np.random.default_rng(int(s)), r, tile_width, tile_height, self.crops,
                                 self.hed_strength, self.hed_p, photometric, self.stain_aug)
                for r, s in zip(self.recipes, seeds)]

    def __call__(self, tile: np.ndarray, rng: np.random.Generator,
                 photometric: float = 1.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Global and local crops of ``tile``; ``photometric`` in [0, 1] scales the probabilities of the
        photometric augmentations (see :func:`photometric_scale`). The random draws do not depend on it."""
        params = self.draw(rng, tile.shape[1], tile.shape[0], photometric)
        img = Image.fromarray(tile)
        out = [normalize(self.apply_crop(img, p, r.size), self.mean, self.std) for r, p in zip(self.recipes, params)]
        return out[:2], out[2:]


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


__all__ = ["MultiCrop", "HEDParams", "CropRecipe", "random_resized_crop_box", "normalize", "adjust_hue",
           "apply_crop_pil", "apply_crop_opencv", "photometric_scale"]
