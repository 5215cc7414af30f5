"""The ViT's layers: attention (SDPA, or xformers' memory-efficient kernel over all crops of a multi-crop
batch at once), patch embedding, MLP / SwiGLU, LayerScale, stochastic depth and the pre-norm block, with
DINOv2's parameter names (:mod:`pathfm.backbone.vit` assembles them)."""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathfm.errors import ConfigError


# ------------------------------------------------------------------------------------- attention
def xformers_available() -> bool:
    """True if xformers imports with its C++/CUDA library loaded and the user did not set ``XFORMERS_DISABLED``
    (a wheel built for another CUDA, e.g. the PyPI one for CUDA 12 under torch+cu130, imports but cannot
    load its kernels: False, and ``auto`` uses SDPA)."""
    if os.environ.get("XFORMERS_DISABLED"):
        return False
    try:
        import xformers
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or a broken build without kernels
        return False
    return bool(getattr(xformers, "_has_cpp_library", True))


def select_attention_backend(requested: str, device: torch.device | str) -> str:
    """``"xformers"`` or ``"sdpa"`` for a model on ``device``.

    ``auto`` takes xformers on CUDA when available; ``xformers`` on a machine without it is a ConfigError.
    """
    device = torch.device(device)
    if requested == "sdpa":
        return "sdpa"
    has_xf = device.type == "cuda" and xformers_available()
    if requested == "xformers" and not has_xf:
        raise ConfigError(
            "model.attention=xformers but xformers is not usable here (needs a CUDA device, xformers built for "
            "this torch's CUDA (`pip install -e .[gpu]`, docs/large-backbones.md) whose kernel library loads, and "
            "XFORMERS_DISABLED unset); use model.attention=auto or sdpa"
        )
    return "xformers" if has_xf else "sdpa"


def _attend_groups(q: Tensor, k: Tensor, v: Tensor, groups: Sequence[tuple[int, int]], backend: str) -> Tensor:
    """Self-attention inside each group of rows of a flat token tensor.

    q, k, v: (T, H, hd) with T = sum(B_i * N_i); group i is B_i sequences of N_i tokens. Returns (T, H, hd).
    """
    if backend == "xformers":
        from xformers.ops import fmha, memory_efficient_attention

        seqlens = [n for b, n in groups for _ in range(b)]
        bias = fmha.BlockDiagonalMask.from_seqlens(seqlens)
        return memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)[0]
    outs = []
    start = 0
    for b, n in groups:
        sl = slice(start, start + b * n)
        start += b * n
        # (B, N, H, hd) -> (B, H, N, hd)
        qi, ki, vi = (t[sl].view(b, n, t.shape[1], t.shape[2]).transpose(1, 2) for t in (q, k, v))
        oi = F.scaled_dot_product_attention(qi, ki, vi)
        outs.append(oi.transpose(1, 2).reshape(b * n, q.shape[1], q.shape[2]))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


# ---------------------------------------------------------------------------------------- layers
class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (a strided convolution)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, groups: Sequence[tuple[int, int]], backend: str) -> Tensor:
        """x: flat tokens (T, D) of the given groups."""
        t, d = x.shape
        q, k, v = self.qkv(x).view(t, 3, self.num_heads, d // self.num_heads).unbind(1)
        out = _attend_groups(q, k, v, groups, backend)
        return self.proj(out.reshape(t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU FFN (Shazeer 2020) with DINOv2's hidden size round_up_8(floor(4D * 2/3))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose weight and bias take the input's dtype: under FSDP's bf16 compute parameters the
    fp32 residual stream is normalised in fp32, as CUDA autocast does for every LayerNorm (CPU autocast would
    refuse the mixed dtypes). A no-op when the dtypes agree (fp32, DDP + autocast)."""

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if w is not None and w.dtype != x.dtype:
            w, b = w.to(x.dtype), (b.to(x.dtype) if b is not None else None)
        return F.layer_norm(x, self.normalized_shape, w, b, self.eps)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth per sample (Huang et al. 2016): drop a residual branch for a whole sample and
    rescale the kept ones by 1/(1 - rate). x: (B, N, D)."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block acting on a list of crop groups at once.

    Token-wise work (norms, qkv, projections, FFN) runs on all crops' tokens concatenated; only attention
    is done per group (SDPA) or in one block-diagonal call (xformers).
    """

    def __init__(self, dim: int, num_heads: int, ffn: str, layerscale: float | None, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, 4 * dim) if ffn == "swiglu" else Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def _add_branch(self, xs: list[Tensor], branch_flat: Tensor) -> list[Tensor]:
        out, start = [], 0
        for x in xs:
            b, n, d = x.shape
            br = branch_flat[start : start + b * n].view(b, n, d)
            start += b * n
            out.append(x + drop_path(br, self.drop_path_rate, self.training))
        return out

    def forward(self, xs: list[Tensor], backend: str) -> list[Tensor]:
        groups = [(x.shape[0], x.shape[1]) for x in xs]
        flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]) if len(xs) > 1 else xs[0].reshape(-1, xs[0].shape[-1])
        xs = self._add_branch(xs, self.ls1(self.attn(self.norm1(flat), groups, backend)))
        flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]) if len(xs) > 1 else xs[0].reshape(-1, xs[0].shape[-1])
        return self._add_branch(xs, self.ls2(self.mlp(self.norm2(flat))))
