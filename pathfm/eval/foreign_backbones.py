"""Backbones saved by other libraries, for ``pathfm eval``: ``hf:<dir>`` and ``timm:<name>:<file>``.

* ``hf:<dir>``: a Hugging Face model folder (``config.json`` + weights, e.g. kaiko's Midnight or a
  ``pathfm export --format hf`` folder), loaded with ``transformers.AutoModel.from_pretrained(dir,
  local_files_only=True)``; CLS = first token of ``last_hidden_state``, patch tokens after the
  ``num_register_tokens`` registers. Mean/std and size come from ``preprocessor_config.json``.
* ``timm:<name>:<file>``: timm architecture ``name`` with the weights in ``file``
  (``pretrained_cfg_overlay=dict(file=...)``). A ``config.json`` beside the file (timm's Hub layout, as
  ``pathfm export --format timm`` writes) supplies ``model_args`` (e.g. ``img_size``) and mean/std.

Nothing is downloaded. The random-init baseline is the same architecture from its config, seeded. A weights
file with a ``.sha256`` sidecar (``pathfm export`` writes one) is checked against it first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError
from pathfm.eval.backbones import Backbone, CheckpointError, TimmFeatures, state_hash
from pathfm.io import verify_checksum


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({type(e).__name__})") from None


class HFFeatures:
    """Adapter giving a ``transformers`` ViT (Dinov2Model and the like) the ``forward_features`` contract."""

    def __new__(cls, net):  # nn.Module subclass made lazily (no torch import at module load)
        import torch.nn as nn

        class _HFFeatures(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net
                cfg = net.config
                self.embed_dim = int(cfg.hidden_size)
                ps = getattr(cfg, "patch_size", 1)
                self.patch_size = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
                self.n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)

            def forward_features(self, x):
                tokens = self.net(pixel_values=x).last_hidden_state
                return {"cls": tokens[:, 0], "patch": tokens[:, self.n_prefix :]}

        return _HFFeatures(net)


def hf_backbone(directory: str | Path) -> Backbone:
    """A local Hugging Face model folder (see the module docstring)."""
    d = Path(directory).expanduser()
    if not (d / "config.json").is_file():
        raise CheckpointError(f"hf:{directory}: no config.json in {d} (give a folder saved with save_pretrained)")
    try:
        import transformers
    except ImportError:
        raise CheckpointError(f"hf:{directory}: needs transformers (pip install 'pathfm[hf]')") from None
    import torch

    for weights in sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin")):
        verify_checksum(weights)  # a pathfm export's sidecar; other files have none
    try:
        net = transformers.AutoModel.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"hf:{directory}: transformers cannot load it ({str(e).splitlines()[0][:200]})") from None
    model = HFFeatures(net.float()).eval()
    pre = _read_json(d / "preprocessor_config.json") if (d / "preprocessor_config.json").is_file() else {}
    mean = tuple(float(v) for v in pre.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in pre.get("image_std", (0.5, 0.5, 0.5)))
    size = (pre.get("crop_size") or {}).get("height") or getattr(net.config, "image_size", None)
    config = net.config

    def make_random(seed: int):
        torch.manual_seed(seed)
        return HFFeatures(transformers.AutoModel.from_config(config).float()).eval()

    name = getattr(config, "model_type", "hf")
    return Backbone(model, f"hf:{directory}", f"hf:{state_hash(model)}", 0, f"hf:{name}", mean, std,  # type: ignore[arg-type]
                    int(size) if size else None, make_random)


def _create(timm: Any, name: str, **kwargs: Any):
    """A headless timm model that takes any input size (ViTs: ``dynamic_img_size``; other models ignore it)."""
    try:
        return timm.create_model(name, num_classes=0, dynamic_img_size=True, **kwargs)
    except TypeError:  # not a ViT
        return timm.create_model(name, num_classes=0, **kwargs)


def timm_file_backbone(name: str, file: str | Path) -> Backbone:
    """timm architecture ``name`` with the weights in ``file`` (see the module docstring)."""
    import timm
    import torch

    from pathfm.backbone.foreign_export import TIMM_MODEL_ARGS

    path = Path(file).expanduser()
    if not path.is_file():
        raise CheckpointError(f"timm:{name}:{file}: no such weights file")
    if name not in timm.list_models():
        raise PathfmError(f"timm:{name}:{file}: timm has no model '{name}'")
    verify_checksum(path)  # a pathfm export's sidecar; other files have none
    beside = _read_json(path.parent / "config.json") if (path.parent / "config.json").is_file() else {}
    if beside.get("architecture") not in (None, name):
        beside = {}  # another model's config: do not take its arguments
    kwargs = {k: v for k, v in beside.get("model_args", {}).items() if k in TIMM_MODEL_ARGS}
    try:
        net = _create(timm, name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except (RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(f"timm:{name}:{file}: the weights do not load ({str(e).splitlines()[0][:200]})") from None
    model = TimmFeatures(net).eval()
    cfg = {**(getattr(net, "pretrained_cfg", {}) or {}), **beside.get("pretrained_cfg", {})}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])

    def make_random(seed: int):
        torch.manual_seed(seed)
        return TimmFeatures(_create(timm, name, pretrained=False, **kwargs)).eval()

    return Backbone(model, f"timm:{name}:{file}", f"timm:{name}:{state_hash(model)}", 0, f"timm:{name}", mean, std,
                    size, make_random)  # fmt: skip
