"""RandStainNA colour augmentation (Shen et al., "RandStainNA: Learning Stain-Agnostic Features from
Histology Slides by Bridging Stain Augmentation and Normalization", MICCAI 2022, arXiv 2206.12694).

Per image, in a colour space (LAB by default; HSV also supported), each channel's mean and standard
deviation are replaced by a "virtual template" drawn from dataset-level distributions:

    mu_c, sd_c        per-image mean and std of channel c
    mu_t ~ N(M_mu_c, S_mu_c),  sd_t ~ N(M_sd_c, S_sd_c)      (the dataset's distribution of per-image statistics)
    mu'  = mu_c + s (mu_t - mu_c),   sd' = sd_c + s (sd_t - sd_c)        strength s in [0, 1]
    x'   = (x - mu_c) / sd_c * sd' + mu'

s = 1 is the paper's method (a Normal template, as its LAB default); s = 0 is exactly the identity. The
dataset-level statistics (M, S per channel for means and stds) are fitted by :func:`fit_randstainna_stats`
from tissue tiles (``pathfm data stain-stats``) and stored as a small YAML; the bundled file
``pathfm/data/stain_stats/randstainna_lab.yaml`` was fitted on tiles of the bundled slides.

The template is drawn from the crop's own generator (six standard normals, always drawn), so it is a pure
function of (seed, sample index) like every other augmentation parameter. Colour conversions are
OpenCV's float32 ones (RGB in [0, 1]: L in [0, 100], a and b about [-128, 127]; H in degrees [0, 360), S and V in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from pathfm.errors import ConfigError

COLOR_SPACES = {"lab": (cv2.COLOR_RGB2Lab, cv2.COLOR_Lab2RGB), "hsv": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)}
BUNDLED_STATS = Path(__file__).parent / "stain_stats" / "randstainna_lab.yaml"
MIN_STD = 1e-3  # a flat channel (std below this) keeps its spread: no division by ~0


@dataclass(frozen=True)
class RandStainNAStats:
    """Dataset-level Normal distributions of per-image channel means and stds in ``color_space``."""

    color_space: str
    mean_of_means: tuple[float, float, float]
    std_of_means: tuple[float, float, float]
    mean_of_stds: tuple[float, float, float]
    std_of_stds: tuple[float, float, float]
    n_images: int
    source: str = ""

    def save(self, path: str | Path) -> None:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        header = "# RandStainNA dataset-level statistics (pathfm/data/randstainna.py), from `pathfm data stain-stats`\n"
        Path(path).write_text(header + yaml.safe_dump(d, sort_keys=False))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RandStainNAStats":
        """The statistics in ``path`` (None: the bundled LAB statistics); ConfigError naming the file otherwise."""
        p = Path(path) if path is not None else BUNDLED_STATS
        if not p.is_file():
            raise ConfigError(f"data.stain_aug.randstainna.stats: no file {p}; write one with "
                              "`pathfm data stain-stats --out FILE.yaml` or set it to null for the bundled statistics")
        d = yaml.safe_load(p.read_text())
        try:
            stats = cls(color_space=str(d["color_space"]), n_images=int(d["n_images"]), source=str(d.get("source", "")),
                        **{k: tuple(float(x) for x in d[k]) for k in
                           ("mean_of_means", "std_of_means", "mean_of_stds", "std_of_stds")})  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{p}: not a RandStainNA statistics file ({e}); write one with `pathfm data stain-stats`")
        if stats.color_space not in COLOR_SPACES:
            raise ConfigError(f"{p}: color_space {stats.color_space!r}, expected one of {sorted(COLOR_SPACES)}")
        return stats


def to_color_space(rgb: np.ndarray, color_space: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 channels of ``color_space`` (OpenCV's float conversion)."""
    return cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), COLOR_SPACES[color_space][0])


def channel_stats(rgb: np.ndarray, color_space: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of one image in ``color_space`` (float64, shape (3,) each)."""
    mean, std = cv2.meanStdDev(to_color_space(rgb, color_space))  # accumulates in float64
    return mean.ravel(), std.ravel()


def fit_randstainna_stats(tiles: Iterable[np.ndarray], color_space: str = "lab", source: str = "") -> RandStainNAStats:
    """Mean and std over images of the per-image channel means and stds (the paper's Normal fit)."""
    if color_space not in COLOR_SPACES:
        raise ConfigError(f"color space {color_space!r}: expected one of {sorted(COLOR_SPACES)}")
    per_image = [channel_stats(t, color_space) for t in tiles]
    if len(per_image) < 2:
        raise ConfigError(f"RandStainNA statistics need at least 2 tiles, got {len(per_image)}")
    m, s = np.stack([a for a, _ in per_image]), np.stack([b for _, b in per_image])

    def tup(a: np.ndarray) -> tuple[float, float, float]:
        return tuple(round(float(x), 6) for x in a)  # type: ignore[return-value]

    return RandStainNAStats(color_space, tup(m.mean(0)), tup(m.std(0)), tup(s.mean(0)), tup(s.std(0)), len(m), source)


def sample_randstainna_template(rng: np.random.Generator, stats: RandStainNAStats) -> tuple[float, ...]:
    """(mu_t[3], sd_t[3]) drawn from the dataset-level Normals; always six standard normals from ``rng``."""
    z = rng.standard_normal(6)
    mu = np.asarray(stats.mean_of_means) + np.asarray(stats.std_of_means) * z[:3]
    sd = np.maximum(np.asarray(stats.mean_of_stds) + np.asarray(stats.std_of_stds) * z[3:], MIN_STD)
    return tuple(float(x) for x in np.concatenate([mu, sd]))


def randstainna_augment(rgb: np.ndarray, template: tuple[float, ...], strength: float, color_space: str) -> np.ndarray:
    """The transform of the module docstring on a uint8 RGB image; a new uint8 image of the same shape
    (rounded, clipped). ``strength == 0`` returns an exact copy."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if strength == 0:
        return rgb.copy()
    x = to_color_space(rgb, color_space)
    mu, sd = (v.ravel() for v in cv2.meanStdDev(x))
    mu_t, sd_t = np.asarray(template[:3]), np.asarray(template[3:])
    new_mu = mu + strength * (mu_t - mu)
    new_sd = sd + strength * (sd_t - sd)
    scale = np.where(sd > MIN_STD, new_sd / np.maximum(sd, MIN_STD), 1.0)
    # x' = x * scale + (new_mu - mu * scale), one per-pixel affine pass
    y = cv2.transform(x, np.concatenate([np.diag(scale), (new_mu - mu * scale)[:, None]], axis=1).astype(np.float32))
    if color_space == "hsv":
        y[..., 0] = np.mod(y[..., 0], 360.0)  # hue is an angle
        np.clip(y[..., 1:], 0.0, 1.0, out=y[..., 1:])
    out = cv2.cvtColor(y, COLOR_SPACES[color_space][1])
    return cv2.convertScaleAbs(out, alpha=255.0)
