"""Batched frozen-feature extraction, pooling, colour-histogram baseline features and the on-disk cache.

Pooling (eva / Midnight protocol): ``cls``, ``mean`` (mean of patch tokens) or ``cls+mean`` (the two
concatenated, 2*D; the paper's default for every model). Features are computed without gradients in eval
mode (the module's training flag is restored afterwards). The cache key is the backbone's content hash +
the task fingerprint + every option that changes the numbers; files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pathfm.errors import PathfmError
from pathfm.records import RunFolder

POOLINGS = ("cls+mean", "cls", "mean")
CACHE_VERSION = 1


def pool_tokens(out: dict, pooling: str):
    """``{"cls": (B,D), "patch": (B,N,D)}`` -> (B, D) or (B, 2D) for ``cls+mean``."""
    import torch

    if pooling == "cls":
        return out["cls"]
    if pooling == "mean":
        return out["patch"].mean(1)
    if pooling == "cls+mean":
        return torch.cat([out["cls"], out["patch"].mean(1)], dim=1)
    raise PathfmError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")


def resolve_device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_input_size(size: int, patch_size: int | None) -> None:
    if patch_size and size % patch_size:
        lo = max(patch_size, size // patch_size * patch_size)
        raise PathfmError(
            f"input size {size} px is not a multiple of the model's patch size {patch_size}; "
            f"resize to {lo} or {lo + patch_size} (--resize)"
        )


def extract_features(model, images: np.ndarray, *, mean=(0.5,) * 3, std=(0.5,) * 3, pooling: str = "cls+mean",
                     resize: int | None = None, batch_size: int = 64, device=None, progress: bool = False,
                     desc: str = "features") -> np.ndarray:
    """Features (M, D') float32 of uint8 images (M, S, S, 3). ``resize`` interpolates to that many px
    (bicubic, antialiased) before normalising -- e.g. the model's training resolution."""
    import torch
    import torch.nn.functional as F

    if pooling not in POOLINGS:
        raise PathfmError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PathfmError(f"expected uint8 images (M, S, S, 3), got {images.shape}")
    size = int(resize or images.shape[1])
    check_input_size(size, getattr(model, "patch_size", None))
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    param = next(iter(model.parameters()), None)
    was_training = model.training
    moved_from = None
    if param is not None and param.device != dev:
        moved_from = param.device
        model.to(dev)
    model.eval()
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    starts = range(0, len(images), batch_size)
    if progress:
        from pathfm.progress import progress_bar

        starts = progress_bar(starts, desc=desc, unit="batch", leave=False)
    chunks = []
    try:
        with torch.inference_mode():
            for i in starts:
                x = torch.from_numpy(images[i:i + batch_size]).to(dev).permute(0, 3, 1, 2).float().div_(255)
                if size != x.shape[-1]:
                    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
                    x = x.clamp_(0, 1)
                x = (x - m) / s
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    out = model.forward_features(x)
                chunks.append(pool_tokens(out, pooling).float().cpu())
    finally:
        model.train(was_training)
        if moved_from is not None:
            model.to(moved_from)
    feats = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
    if not np.isfinite(feats).all():
        raise PathfmError("the backbone produced non-finite features (NaN/inf): the checkpoint is broken or diverged")
    return feats


def color_histogram_features(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Baseline features with no learning: per-channel RGB histograms (``bins`` each, densities) plus the
    per-channel mean and standard deviation (3*bins + 6 dims)."""
    if 256 % bins:
        raise ValueError("bins must divide 256")
    m = images.shape[0]
    flat = images.reshape(m, -1, 3)
    shift = int(np.log2(256 // bins))
    out = np.empty((m, 3 * bins + 6), dtype=np.float32)
    offsets = (np.arange(m) * bins)[:, None]
    for c in range(3):
        idx = (flat[:, :, c] >> shift).astype(np.int64) + offsets
        hist = np.bincount(idx.ravel(), minlength=m * bins).reshape(m, bins)
        out[:, c * bins:(c + 1) * bins] = hist / flat.shape[1]
    x = flat.astype(np.float32) / 255.0
    out[:, 3 * bins:3 * bins + 3] = x.mean(1)
    out[:, 3 * bins + 3:] = x.std(1)
    return out


# ------------------------------------------------------------------------------------------- cache
def default_cache_dir(run_dir: Path | None = None) -> Path:
    if run_dir is not None:
        return RunFolder(run_dir).eval_cache
    env = os.environ.get("PATHFM_CACHE")
    return Path(env).expanduser() / "features" if env else Path.home() / ".cache" / "pathfm" / "features"


def cache_key(identity: str, task_fingerprint: str, **options) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "backbone": identity, "task": task_fingerprint, **options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class FeatureCache:
    """``<dir>/<task>-<key>.npy``; ``dir=None`` disables caching."""

    def __init__(self, directory: str | Path | None):
        self.dir = Path(directory) if directory is not None else None

    def path(self, task_name: str, key: str) -> Path | None:
        return None if self.dir is None else self.dir / f"{task_name}-{key}.npy"

    def load(self, task_name: str, key: str) -> np.ndarray | None:
        p = self.path(task_name, key)
        if p is None or not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):  # a damaged entry is recomputed
            return None

    def save(self, task_name: str, key: str, feats: np.ndarray) -> None:
        p = self.path(task_name, key)
        if p is None:
            return
        from pathfm.io import atomic_path

        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, feats, allow_pickle=False)
