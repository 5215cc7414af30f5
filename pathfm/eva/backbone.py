"""eva's entry point to a pathfm-loadable backbone.

eva builds the backbone of its embeddings writer with ``eva.models.ModelFromFunction``::

    backbone:
      class_path: eva.models.ModelFromFunction
      init_args:
        path: pathfm.eva.backbone.eva_backbone
        arguments: {source: runs/b14, pooling: cls+mean}

``source`` is anything ``pathfm eval`` accepts (a run dir, a ``teacher_backbone.pt``, ``hf:<dir>``,
``timm:<name>:<file>``); the module returns the pooled embedding pathfm's own probes use (``cls``, ``mean``
of the patch tokens, or both concatenated) of an image already resized and normalised by eva's transforms.
"""

from __future__ import annotations

import torch
from torch import nn

from pathfm.eval.features import POOLINGS, pool_tokens
from pathfm.eval.sources import load_source
from pathfm.errors import ConfigError


class PooledBackbone(nn.Module):
    """``forward(x) -> (B, D)`` (``(B, 2D)`` for ``cls+mean``) from a ``forward_features`` backbone."""

    def __init__(self, features: nn.Module, pooling: str = "cls+mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"eva backbone: pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
        self.features = features
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.features.forward_features(x), self.pooling)


def eva_backbone(source: str, pooling: str = "cls+mean", random_init_seed: int | None = None) -> nn.Module:
    """The backbone named by ``source`` (see the module docstring) in eval mode; with ``random_init_seed``
    the same architecture randomly initialised with that seed (pathfm's random-init baseline)."""
    bb = load_source(source)
    if random_init_seed is not None:
        bb = bb.random_init(int(random_init_seed))
    return PooledBackbone(bb.model, pooling).eval()
