"""The DINO / iBOT projection head (DINOv2 ``layers/dino_head.py``, re-written).

``in_dim -> hidden -> ... -> bottleneck`` MLP with GELU (no batch norm), L2 normalisation of the bottleneck
vector, then a weight-normalised linear layer without bias onto the K prototypes:

    logits = g * (V / ||V||_row) @ normalize(mlp(x))

The gain ``g`` (one per prototype, initialised to 1) is trainable, as in DINOv2 (DINO v1 froze it).
Weight normalisation is a ``torch.nn.utils.parametrizations.weight_norm`` parametrization, which survives
``copy.deepcopy`` (the EMA teacher) and ``state_dict`` round trips; its parameters are named
``last_layer.parametrizations.weight.original0`` (g, shape (K, 1)) and ``...original1`` (V, shape (K, bottleneck)),
so name-driven code (:mod:`pathfm.ssl.param_groups`: "last_layer" = frozen for the first steps) finds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from pathfm.config import HeadConfig
from pathfm.errors import ConfigError


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, n_layers: int) -> nn.Sequential:
    """``n_layers`` linear layers, GELU between them (none after the last)."""
    dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP -> bottleneck -> L2 normalise -> weight-normalised prototypes (no bias).

    ``forward(x: (N, in_dim)) -> (N, cfg.n_prototypes)`` logits. Under fp16 autocast the L2 normalisation
    uses eps 1e-6 (1e-12 otherwise), as DINOv2 does.
    """

    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        if in_dim < 1:
            raise ConfigError(f"DINOHead in_dim must be >= 1, got {in_dim}")
        self.in_dim = in_dim
        self.n_prototypes = cfg.n_prototypes
        self.bottleneck_dim = cfg.bottleneck_dim
        self.mlp = _mlp(in_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers)
        self._init_mlp()
        last = nn.Linear(cfg.bottleneck_dim, cfg.n_prototypes, bias=False)
        nn.init.trunc_normal_(last.weight, std=0.02)
        self.last_layer = weight_norm(last, name="weight", dim=0)
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)

    def _init_mlp(self) -> None:
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def gain(self) -> Tensor:
        """The trainable per-prototype gain g, shape (K, 1)."""
        return self.last_layer.parametrizations.weight.original0

    def bottleneck(self, x: Tensor) -> Tensor:
        """The L2-normalised bottleneck features (N, bottleneck_dim)."""
        z = self.mlp(x)
        eps = 1e-6 if z.dtype == torch.float16 else 1e-12
        return F.normalize(z, dim=-1, p=2, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"DINOHead expects features of width {self.in_dim}, got shape {tuple(x.shape)}")
        return self.last_layer(self.bottleneck(x))
