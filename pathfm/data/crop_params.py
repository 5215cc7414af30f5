"""The random parameters of one multi-crop crop, drawn once and applied by either augmentation path.

``draw_crop_params(rng, recipe, ...)`` is the one owner of the random draws of a crop: the CPU path
(:class:`pathfm.data.multicrop.MultiCrop`, PIL in the worker) and the device path
(:mod:`pathfm.data.device_augment`, batched torch on the training device) apply the same
:class:`CropParams`, so sample ``k`` has the same crop boxes, flips and photometric decisions on both.

Draw order (fixed, so switching one augmentation off moves no other decision): 20 uniforms ``u`` (slots:
0 hflip, 1 vflip, 2 HED apply, 3 jitter apply, 4-7 jitter factors, 8-11 jitter order, 12 grayscale,
13 blur apply, 14 blur sigma, 15 solarize), then the RandomResizedCrop box, then the HED alpha/beta, then
(only with a CPU-only ``data.stain_aug.method``, :mod:`pathfm.data.stain_aug`) that method's parameters.
Slot 2 decides whether the crop's stain augmentation (HED or the other method) applies.

``CropParams.to_row()`` packs a crop into ``N_PARAM`` floats (layout :data:`PARAM_FIELDS`) so a batch of
crops travels from the workers as one float tensor; every value is exact in float32 except the HED
alpha/beta and the jitter factors, which are float32-rounded (relative error <= 6e-8). A crop with
``stain`` parameters (RandStainNA, Macenko) has no row: those methods run in the CPU workers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pathfm.data.hed import HEDParams, sample_hed_params
from pathfm.data.stain_aug import StainAugmenter, StainParams

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))

PARAM_FIELDS = (
    "left", "top", "width", "height", "hflip", "vflip",
    "hed_on", "hed_alpha_h", "hed_alpha_e", "hed_alpha_d", "hed_beta_h", "hed_beta_e", "hed_beta_d",
    "jitter_on", "brightness", "contrast", "saturation", "hue",
    "order_0", "order_1", "order_2", "order_3",
    "grayscale", "blur_sigma", "solarize",
)  # fmt: skip
N_PARAM = len(PARAM_FIELDS)
COLUMN = {name: i for i, name in enumerate(PARAM_FIELDS)}
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # op ids 0-3 in the order columns


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
    """What differs between the crops of one sample: output size, area scale, blur and solarize probability."""

    size: int
    scale: tuple[float, float]
    blur: float
    solarize: float


@dataclass(frozen=True)
class CropParams:
    """Every decision of one crop. ``None`` / ``False`` means the operation is not applied."""

    box: tuple[int, int, int, int]  # (left, top, w, h) in tile pixels
    hflip: bool = False
    vflip: bool = False
    hed: HEDParams | None = None
    jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation factors; hue shift
    jitter_order: tuple[int, int, int, int] = (0, 1, 2, 3)  # op ids, see JITTER_OPS
    grayscale: bool = False
    blur_sigma: float | None = None
    solarize: bool = False
    stain: StainParams | None = None  # a CPU-only stain method's parameters (data.stain_aug.method)

    def to_row(self) -> np.ndarray:
        if self.stain is not None:
            raise ValueError(f"a crop with {self.stain.method} stain parameters cannot travel as a row: "
                             "that method runs in the CPU workers (data.augment_on=cpu)")
        row = np.zeros(N_PARAM, np.float64)
        row[0:4] = self.box
        row[4:6] = self.hflip, self.vflip
        hed = self.hed or HEDParams()
        row[6] = self.hed is not None
        row[7:10], row[10:13] = hed.alpha, hed.beta
        row[13] = self.jitter is not None
        row[14:18] = self.jitter if self.jitter is not None else (1.0, 1.0, 1.0, 0.0)
        row[18:22] = self.jitter_order
        row[22] = self.grayscale
        row[23] = self.blur_sigma or 0.0
        row[24] = self.solarize
        return row

    @classmethod
    def from_row(cls, row) -> "CropParams":
        r = [float(x) for x in row]
        return cls(
            box=tuple(int(x) for x in r[0:4]),  # type: ignore[arg-type]
            hflip=bool(r[4]), vflip=bool(r[5]),
            hed=HEDParams(tuple(r[7:10]), tuple(r[10:13])) if r[6] else None,  # type: ignore[arg-type]
            jitter=tuple(r[14:18]) if r[13] else None,  # type: ignore[arg-type]
            jitter_order=tuple(int(x) for x in r[18:22]),  # type: ignore[arg-type]
            grayscale=bool(r[22]), blur_sigma=r[23] if r[23] > 0 else None, solarize=bool(r[24]),
        )  # fmt: skip


def draw_crop_params(rng: np.random.Generator, recipe: CropRecipe, tile_width: int, tile_height: int, crops_cfg,
                     hed_strength: float, hed_p: float, photometric: float = 1.0,
                     stain_aug: StainAugmenter | None = None) -> CropParams:
    """The parameters of one crop (``crops_cfg``: a :class:`pathfm.config.CropsConfig`). ``photometric``
    scales the probabilities of HED, jitter, grayscale, blur, solarize and ``stain_aug``'s method; the draws
    never depend on it."""
    c = crops_cfg
    u = rng.random(20)  # blur sigma ~ U(0.1, 2.0) as in DINOv2
    box = random_resized_crop_box(rng, tile_width, tile_height, recipe.scale)
    hed = sample_hed_params(rng, hed_strength)
    stain = stain_aug.draw(rng) if stain_aug is not None else None
    if stain_aug is not None and (u[2] >= stain_aug.p * photometric or stain_aug.strength == 0):
        stain = None
    jitter = None
    if u[3] < c.color_jitter * photometric:
        b, ct, s, h = c.jitter_strength
        jitter = (1 + b * (2 * u[4] - 1), 1 + ct * (2 * u[5] - 1), 1 + s * (2 * u[6] - 1), h * (2 * u[7] - 1))
    return CropParams(
        box=box,
        hflip=bool(u[0] < c.hflip),
        vflip=bool(u[1] < c.vflip),
        hed=hed if (u[2] < hed_p * photometric and not hed.is_identity) else None,
        jitter=tuple(float(x) for x in jitter) if jitter is not None else None,  # type: ignore[arg-type]
        jitter_order=tuple(int(x) for x in np.argsort(u[8:12])),  # type: ignore[arg-type]  # a uniform permutation
        grayscale=bool(u[12] < c.grayscale * photometric),
        blur_sigma=float(0.1 + 1.9 * u[14]) if u[13] < recipe.blur * photometric else None,
        solarize=bool(u[15] < recipe.solarize * photometric),
        stain=stain,
    )
