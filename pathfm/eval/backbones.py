"""Frozen backbones to evaluate: our exported teacher (run dir / file), any timm model by name, or a module.

Every backbone is exposed the same way (the contract of ``pathfm.backbone.backbone_file``)::

    model.forward_features(x) -> {"cls": (B, D), "patch": (B, N, D)}     # x normalised (B, 3, H, W)
    model.embed_dim, model.patch_size

plus what evaluation needs around it (:class:`Backbone`): a content hash for the feature cache, the step,
the input normalisation, the training resolution and a way to build a *random* initialisation of the same
architecture (the honesty baseline). timm models are created with ``pretrained=False`` (no downloads).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pathfm.errors import PathfmError
from pathfm.records import RunFolder

RANDOM_INIT_SEED = 1234  # fixed: the random baseline is the same network in every evaluation


class CheckpointError(PathfmError):
    """A checkpoint that is not a pathfm backbone, or whose weights do not fit its architecture."""


@dataclass
class Backbone:
    model: Any  # torch.nn.Module with forward_features -> {"cls", "patch"}
    source: str  # what the user gave (run dir, file, "timm:<name>")
    identity: str  # content hash (cache key)
    step: int
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int | None  # the resolution it was trained at, when known
    make_random: Callable[[int], Any]  # seed -> randomly initialised module of the same architecture
    run_dir: Path | None = None

    def random_init(self, seed: int = RANDOM_INIT_SEED) -> "Backbone":
        """The honesty baseline: the same architecture, randomly initialised (seeded)."""
        model = self.make_random(seed)
        return Backbone(model, self.source, f"random:{self.arch}:{seed}:{state_hash(model)}", self.step,
                        self.arch, self.mean, self.std, self.native_size, self.make_random, self.run_dir)


# -------------------------------------------------------------------------------------------- timm
class TimmFeatures:
    """Adapter giving a timm model the ``forward_features -> {"cls", "patch"}`` contract."""

    def __new__(cls, net):  # a real nn.Module subclass is created lazily (no torch import at module load)
        import torch.nn as nn

        class _TimmFeatures(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net
                self.embed_dim = int(getattr(net, "num_features", 0) or getattr(net, "embed_dim"))
                pe = getattr(net, "patch_embed", None)
                ps = getattr(pe, "patch_size", None)
                self.patch_size = int(ps[0] if isinstance(ps, (tuple, list)) else (ps or 1))
                self.n_prefix = int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None else 0))

            def forward_features(self, x):
                out = self.net.forward_features(x)
                if out.ndim == 4:  # CNN: (B, C, H, W) -> tokens (B, HW, C); "cls" = global average
                    patch = out.flatten(2).transpose(1, 2)
                    return {"cls": patch.mean(1), "patch": patch}
                patch = out[:, self.n_prefix:]
                cls_tok = out[:, 0] if self.n_prefix > 0 else patch.mean(1)
                return {"cls": cls_tok, "patch": patch}

        return _TimmFeatures(net)


def _create_timm(name: str, seed: int):
    import timm
    import torch

    if name not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=4)
        raise PathfmError(f"timm has no model '{name}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    torch.manual_seed(seed)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError:  # not a ViT: no dynamic_img_size
        torch.manual_seed(seed)
        net = timm.create_model(name, pretrained=False, num_classes=0)
    return TimmFeatures(net).eval()


def timm_backbone(name: str, seed: int = 0) -> Backbone:
    """A timm model by name, randomly initialised (``pretrained=False``: nothing is downloaded)."""
    model = _create_timm(name, seed)
    cfg = getattr(model.net, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    size = (cfg.get("input_size") or (3, 224, 224))[-1]
    return Backbone(model, f"timm:{name}", f"timm:{name}:{seed}:{state_hash(model)}", 0, f"timm:{name}", mean, std,
                    int(size), lambda s: _create_timm(name, s))


# --------------------------------------------------------------------------------------------- ours
def _run_normalisation(run_dir: Path | None) -> tuple[float, float, int | None]:
    """(mean, std, training resolution) from the run's config.yaml; pathfm's defaults otherwise."""
    if run_dir is None or not RunFolder(run_dir).config.is_file():
        return 0.5, 0.5, None
    try:
        from pathfm.config import read_yaml

        tree = read_yaml(RunFolder(run_dir).config)
        data = tree.get("data", {})
        size = data.get("crops", {}).get("global_size")
        if tree.get("highres", {}).get("enabled"):
            size = tree["highres"].get("global_size", size)
        return float(data.get("normalize_mean", 0.5)), float(data.get("normalize_std", 0.5)), size
    except Exception:  # a broken run config must not block evaluating the weights
        return 0.5, 0.5, None


def pathfm_backbone(path: str | Path) -> Backbone:
    """Our exported teacher backbone: a run dir (uses ``teacher_backbone.pt``) or a backbone / checkpoint file."""
    p = Path(path).expanduser()
    if not p.exists():
        from pathfm.config import resolve_path

        p = resolve_path(p)
    if not p.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint (give a run dir, a .pt file or timm:<name>)")
    if p.is_dir():
        file = RunFolder(p).teacher_backbone
        if not file.is_file():
            raise CheckpointError(
                f"{p}: no teacher_backbone.pt in this run directory; train it first (pathfm train) or give a "
                f"checkpoint file"
            )
    else:
        file = p
    try:
        from pathfm.backbone.backbone_file import load_backbone
    except ImportError as e:  # the trainer part is not installed
        raise CheckpointError(f"cannot load {file}: pathfm.backbone.backbone_file is unavailable ({e})") from None
    from pathfm.io import sha256_file

    try:
        model, meta = load_backbone(file)
    except PathfmError:
        raise
    except Exception as e:  # anything torch raises on a foreign / truncated file
        raise CheckpointError(
            f"{file} is not a pathfm backbone ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"give a run dir, its teacher_backbone.pt, or timm:<name>"
        ) from None
    model.eval()
    found = RunFolder.around(file.parent if file.is_file() else file)
    run_dir = found.path if found is not None else None
    mean, std, size = _run_normalisation(run_dir)
    model_cfg = dict(meta.get("model", {}))
    arch = str(model_cfg.get("arch", type(model).__name__))

    def make_random(seed: int):
        import torch

        from pathfm.backbone.vit import build_backbone

        torch.manual_seed(seed)
        return build_backbone(model_cfg, drop_path=0.0).eval()

    digest = meta.get("sha256") or sha256_file(file)  # verified against its sidecar when it has one
    return Backbone(model, str(path), "sha256:" + digest, int(meta.get("step", 0) or 0), arch,
                    (mean,) * 3, (std,) * 3, size, make_random, run_dir)


def reference_backbone(model_cfg: Any, *, mean: float = 0.5, std: float = 0.5, native_size: int | None = None,
                       name: str = "reference") -> Backbone:
    """The honesty baselines of an architecture that has no trained weights (a sweep's reference rows).

    :meth:`~Backbone.random_init` builds ``model_cfg`` (a ``cfg.model`` or its dump) seeded with
    :data:`RANDOM_INIT_SEED` exactly as :func:`pathfm_backbone`'s ``make_random`` does, so
    ``evaluate(reference_backbone(cfg.model), trained=False)`` gives the same ``random_init`` rows as
    ``evaluate(run_dir)`` of any run of that architecture and input normalisation. ``model`` is None."""
    d = model_cfg.model_dump(mode="json") if hasattr(model_cfg, "model_dump") else dict(model_cfg)

    def make_random(seed: int):
        import torch

        from pathfm.backbone.vit import build_backbone

        torch.manual_seed(seed)
        return build_backbone(d, drop_path=0.0).eval()

    arch = str(d.get("arch", "vit"))
    # no trained weights: ``model`` stays None (evaluate with trained=False builds only random_init())
    return Backbone(None, name, f"reference:{arch}", 0, arch, (float(mean),) * 3, (float(std),) * 3, native_size,
                    make_random)


def module_backbone(model, *, name: str = "module", step: int = 0, mean: float = 0.5, std: float = 0.5,
                    make_random: Callable[[int], Any] | None = None) -> Backbone:
    """Wrap an in-memory module that already has ``forward_features -> {"cls", "patch"}``."""
    if not hasattr(model, "forward_features"):
        raise PathfmError(f"{type(model).__name__} has no forward_features(x) -> {{'cls', 'patch'}}")

    def _no_random(seed: int):
        raise PathfmError(f"{name}: cannot build a random initialisation (pass make_random=...)")

    return Backbone(model, name, f"module:{state_hash(model)}", step, type(model).__name__, (mean,) * 3, (std,) * 3,
                    None, make_random or _no_random)


def state_hash(model) -> str:
    """sha256 (16 hex) over parameter names, shapes and bytes: equal weights give equal hashes."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
