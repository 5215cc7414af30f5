"""Optimizer parameter groups from parameter names (DINOv2 ``utils/param_groups.py``, A.5).

* layer id: 0 for ``pos_embed``, ``patch_embed.*``, ``cls_token``, ``mask_token``, ``register_tokens``;
  i + 1 for ``blocks.<i>.``; L + 1 for everything else (final norm, heads). Names may carry prefixes
  (``backbone.``, ``module.``).
* lr multiplier: ``layerwise_decay ** (L + 1 - layer_id)``, times ``patch_embed_lr_mult`` for patch-embed
  parameters.
* weight-decay multiplier 0 for biases (``.bias``), norms (``norm`` in the name), LayerScale (``gamma``)
  and any other 1-D parameter; 1 otherwise (pos_embed, tokens and the prototype gain keep decay).
* last layer: ``last_layer`` in the name (the weight-normalised prototype layer, frozen at the start).

Parameters that share (lr_mult, wd_mult, is_last_layer) are fused into one group; frozen parameters
(``requires_grad=False``) are left out. Each group carries ``names`` for logging.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from torch import nn
from torch.optim import Optimizer

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_LAYER0 = re.compile(r"(?:^|\.)(pos_embed|patch_embed|cls_token|mask_token|register_tokens)(?:$|\.)")


def layer_id(name: str, n_blocks: int) -> int:
    """The layer index of a parameter for layer-wise lr decay (see the module docstring)."""
    m = _BLOCK.search(name)
    if m:
        i = int(m.group(1))
        if i >= n_blocks:
            raise ValueError(f"parameter '{name}' is in block {i}, but n_blocks={n_blocks}")
        return i + 1
    if _LAYER0.search(name):
        return 0
    return n_blocks + 1


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    return name.endswith(".bias") or "norm" in name or "gamma" in name or param.ndim <= 1


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], n_blocks: int, optim_cfg: Any) -> list[dict]:
    """Fused AdamW parameter groups with ``params, lr_mult, wd_mult, is_last_layer, names``."""
    decay = float(optim_cfg.layerwise_decay)
    patch_mult = float(optim_cfg.patch_embed_lr_mult)
    groups: dict[tuple[float, float, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        lr_mult = decay ** (n_blocks + 1 - layer_id(name, n_blocks))
        if "patch_embed" in name:
            lr_mult *= patch_mult
        wd_mult = 0.0 if no_weight_decay(name, param) else 1.0
        is_last = "last_layer" in name
        key = (lr_mult, wd_mult, is_last)
        group = groups.setdefault(
            key, {"params": [], "lr_mult": lr_mult, "wd_mult": wd_mult, "is_last_layer": is_last, "names": []}
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def apply_schedule(optimizer: Optimizer, values: dict) -> None:
    """Write this step's lr and weight decay into every group (last layer uses ``last_layer_lr``)."""
    for group in optimizer.param_groups:
        lr = values["last_layer_lr"] if group.get("is_last_layer", False) else values["lr"]
        group["lr"] = lr * group.get("lr_mult", 1.0)
        group["weight_decay"] = values["wd"] * group.get("wd_mult", 1.0)
