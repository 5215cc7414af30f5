"""The ViT backbone of the DINOv2 / Midnight recipe.

A plain pre-norm Vision Transformer written for self-supervised multi-crop training:

* patch 14 or 16, sizes pico (CPU smoke) to giant (ViT-g/14: width 1536, 40 blocks, 24 heads);
* optional register tokens (Darcet et al. 2024), LayerScale, stochastic depth (student only),
  MLP or SwiGLU feed-forward;
* a learned ``mask_token`` that replaces masked patch embeddings BEFORE the positional embeddings are
  added (iBOT; DINOv2 ``prepare_tokens_with_masks``);
* learned positional embeddings for a 224 px grid, bicubically interpolated to any crop size exactly as
  DINOv2 does it (``scale_factor=((h0+offset)/M, (w0+offset)/M)``, per-model offset and antialias, see
  :func:`interpolate_pos_embed`), so the high-resolution stage at 392 px reuses the same parameters and
  imported DINOv2 weights compute what DINOv2 computes;
* attention through ``torch.nn.functional.scaled_dot_product_attention`` or, on a GPU with xformers
  installed (and ``XFORMERS_DISABLED`` unset), xformers' memory-efficient attention, where all crops of a
  multi-crop batch run in ONE pass with a block-diagonal mask.

Parameter names follow DINOv2 (``blocks.3.attn.qkv.weight``, ``blocks.3.ls1.gamma``, ``mlp.w12`` ...),
which the name-driven parameter groups (layer-wise lr decay, no weight decay on norms/biases/gamma) rely
on, and which lets DINOv2 hub weights load almost as they are (``pathfm.backbone.foreign_weights`` converts them and
timm's layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from pathfm.backbone.layers import Block, LayerNorm, PatchEmbed, select_attention_backend
from pathfm.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    embed_dim: int
    depth: int
    num_heads: int


ARCH_SPECS: dict[str, ArchSpec] = {
    "vit_pico": ArchSpec(96, 4, 3),
    "vit_tiny": ArchSpec(192, 12, 3),
    "vit_small": ArchSpec(384, 12, 6),
    "vit_base": ArchSpec(768, 12, 12),
    "vit_large": ArchSpec(1024, 24, 16),
    "vit_giant": ArchSpec(1536, 40, 24),  # DINOv2 "vit_giant2"
}

BASE_IMG_SIZE = 224  # the grid the learned positional embeddings are stored for


# -------------------------------------------------------------------------------------- backbone
# DINOv2's own defaults (``DinoVisionTransformer``; ``configs/ssl_default_config.yaml``, which Midnight's
# training ran with); the hub's ``*_reg4`` models were trained with offset 0.0 and antialias True instead.
POS_EMBED_OFFSET = 0.1
POS_EMBED_ANTIALIAS = False


def interpolate_pos_embed(
    pos_embed: Tensor,
    grid_hw: tuple[int, int],
    *,
    offset: float = POS_EMBED_OFFSET,
    antialias: bool = POS_EMBED_ANTIALIAS,
) -> Tensor:
    """Resize patch positional embeddings (1, M*M, D) from their square grid to ``grid_hw``, as DINOv2 does.

    Bicubic; with ``offset`` > 0 the resize is given as ``scale_factor = ((h0 + offset) / M, (w0 + offset) /
    M)`` (DINOv2's historical work-around: the sampling positions follow that scale, not h0/M), with
    ``offset`` 0 as the output size (h0, w0). ``antialias`` low-pass filters when shrinking. Same grid: the
    embeddings are returned unchanged. Computed in float32, returned in the input dtype.
    """
    n0 = pos_embed.shape[1]
    side = int(math.isqrt(n0))
    if side * side != n0:
        raise ValueError(f"positional embeddings of {n0} patches are not a square grid")
    h0, w0 = grid_hw
    if (side, side) == (h0, w0):
        return pos_embed
    d = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, side, side, d).permute(0, 3, 1, 2)
    if offset:
        resize: dict[str, Any] = {"scale_factor": ((h0 + offset) / side, (w0 + offset) / side)}
    else:
        resize = {"size": (h0, w0)}
    out = F.interpolate(grid.float(), mode="bicubic", antialias=antialias, **resize)
    if tuple(out.shape[-2:]) != (h0, w0):
        raise ValueError(f"pos-embed offset {offset} resized a {side}x{side} grid to {tuple(out.shape[-2:])}, not {grid_hw}")
    return out.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, h0 * w0, d)


class VisionTransformer(nn.Module):
    """DINOv2-style ViT. See the module docstring; build it with :func:`build_backbone`."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        n_registers: int = 0,
        layerscale: float | None = 1e-5,
        drop_path_rate: float = 0.0,
        ffn: str = "mlp",
        attention: str = "auto",
        base_img_size: int = BASE_IMG_SIZE,
        pos_embed_offset: float = POS_EMBED_OFFSET,
        pos_embed_antialias: bool = POS_EMBED_ANTIALIAS,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.n_registers = n_registers
        self.depth = depth
        self.attention = attention
        self.pos_embed_offset = pos_embed_offset
        self.pos_embed_antialias = pos_embed_antialias
        grid = base_img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, n_registers, embed_dim)) if n_registers else None
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, ffn, layerscale, drop_path_rate) for _ in range(depth)
        )
        self.norm = LayerNorm(embed_dim, eps=1e-6)
        self.cfg: dict[str, Any] | None = None  # the ModelConfig dump, set by build_backbone
        self.activation_checkpointing = False  # recompute each block in backward (model.activation_checkpointing)
        self.compiled_blocks = False  # set by compile_blocks
        self.residual_dtype: torch.dtype | None = None  # None: the parameters' dtype (prepare_tokens)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02)
        nn.init.zeros_(self.patch_embed.proj.bias)

    # ---------------------------------------------------------------------------------- helpers
    @property
    def n_prefix_tokens(self) -> int:
        return 1 + self.n_registers

    def attention_backend(self, device: torch.device | str | None = None) -> str:
        """The attention implementation used for inputs on ``device`` (default: where the weights are)."""
        return select_attention_backend(self.attention, device or self.cls_token.device)

    def prepare_tokens(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Image (B,3,H,W) -> tokens (B, 1+R+N, D): patch embed, mask token, [CLS], pos-embed, registers."""
        b, _, h, w = x.shape
        tokens = self.patch_embed(x)
        if masks is not None:
            if masks.shape != tokens.shape[:2]:
                raise ValueError(f"masks of shape {tuple(masks.shape)} do not match {tuple(tokens.shape[:2])} patches")
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        # The residual stream has one dtype from the first block on: under autocast the patch embedding returns
        # bf16, and LayerScale's fp32 gamma would promote the residual to fp32 after the first block (two dtypes
        # per run: two torch.compile variants of every block). DINOv2 promotes here too (its torch.cat of the
        # fp32 CLS token and the bf16 patches). ``residual_dtype`` None: the parameters' dtype (a no-op in fp32);
        # FSDP's bf16 compute parameters set it to fp32 (pathfm.ssl.sharding.shard_net), so the stream is fp32
        # there as under DDP + autocast (docs/large-backbones.md).
        tokens = tokens.to(self.residual_dtype or self.pos_embed.dtype)
        grid = (h // self.patch_size, w // self.patch_size)
        pos = interpolate_pos_embed(
            self.pos_embed[:, 1:], grid, offset=self.pos_embed_offset, antialias=self.pos_embed_antialias
        )
        tokens = tokens + pos.to(tokens.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1).to(tokens.dtype)
        parts = [cls]
        if self.register_tokens is not None:
            parts.append(self.register_tokens.expand(b, -1, -1).to(tokens.dtype))
        parts.append(tokens)
        return torch.cat(parts, dim=1)

    # ---------------------------------------------------------------------------------- forward
    def forward_features_list(
        self, images: Sequence[Tensor], masks: Sequence[Tensor | None] | None = None
    ) -> list[dict[str, Tensor]]:
        """Several crop groups (e.g. global crops with masks, local crops) in one pass.

        Each group is a batch of same-size images; groups may differ in size. Returns, per group,
        ``{"cls": (B,D), "patch": (B,N,D), "registers": (B,R,D)}`` after the final LayerNorm.
        """
        images = [im for im in images]
        masks = list(masks) if masks is not None else [None] * len(images)
        if len(masks) != len(images):
            raise ValueError("give one mask (or None) per image group")
        keep = [i for i, im in enumerate(images) if im.shape[0] > 0]
        xs = [self.prepare_tokens(images[i], masks[i]) for i in keep]
        backend = self.attention_backend(images[keep[0]].device) if keep else "sdpa"
        checkpointed = self.activation_checkpointing and torch.is_grad_enabled()
        for blk in self.blocks:
            if self.compiled_blocks:  # batch and sequence sizes change (crops, stages): one graph for all of them
                for x in xs:
                    torch._dynamo.maybe_mark_dynamic(x, 0)
                    torch._dynamo.maybe_mark_dynamic(x, 1)
            if checkpointed:  # keep only the block inputs; recompute the block (same RNG: drop path) in backward
                xs = torch.utils.checkpoint.checkpoint(blk, xs, backend, use_reentrant=False)
            else:
                xs = blk(xs, backend)
        out: list[dict[str, Tensor]] = []
        by_index = dict(zip(keep, xs))
        r = self.n_registers
        for i, im in enumerate(images):
            if i not in by_index:
                d = self.embed_dim
                empty = im.new_zeros((0, d))
                out.append({"cls": empty, "patch": im.new_zeros((0, 0, d)), "registers": im.new_zeros((0, r, d))})
                continue
            x = self.norm(by_index[i])
            out.append({"cls": x[:, 0], "registers": x[:, 1 : 1 + r], "patch": x[:, 1 + r :]})
        return out

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        """x: (B,3,H,W) normalised; masks: optional bool (B, N). -> {"cls": (B,D), "patch": (B,N,D), ...}."""
        return self.forward_features_list([x], [masks])[0]

    def forward(self, x: Tensor) -> Tensor:
        """The CLS embedding (B, D)."""
        return self.forward_features(x)["cls"]


def build_backbone(model_cfg: Any, *, drop_path: float | None = None) -> VisionTransformer:
    """A randomly initialised backbone for ``cfg.model`` (a ModelConfig or its dict dump).

    ``drop_path`` overrides the config's rate (the EMA teacher is built with 0).
    """
    d = model_cfg.model_dump() if hasattr(model_cfg, "model_dump") else dict(model_cfg)
    arch = d.get("arch", "vit_small")
    if arch not in ARCH_SPECS:
        raise ConfigError(f"model.arch={arch!r} is unknown; choose one of {', '.join(ARCH_SPECS)}")
    spec = ARCH_SPECS[arch]
    model = VisionTransformer(
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        patch_size=int(d.get("patch_size", 14)),
        n_registers=int(d.get("n_registers", 0)),
        layerscale=d.get("layerscale", 1e-5),
        drop_path_rate=float(d.get("drop_path", 0.0) if drop_path is None else drop_path),
        ffn=d.get("ffn", "mlp"),
        attention=d.get("attention", "auto"),
        pos_embed_offset=float(_or_default(d.get("pos_embed_offset"), POS_EMBED_OFFSET)),
        pos_embed_antialias=bool(_or_default(d.get("pos_embed_antialias"), POS_EMBED_ANTIALIAS)),
    )
    model.activation_checkpointing = bool(d.get("activation_checkpointing", False))
    # the resolved settings travel with the model (export writes model.cfg)
    model.cfg = {**d, "pos_embed_offset": model.pos_embed_offset, "pos_embed_antialias": model.pos_embed_antialias}
    return model


def compile_blocks(model: VisionTransformer, backend: str = "inductor") -> None:
    """``model.compile``: torch.compile each transformer block's ``forward`` (the block is where the compute
    is, and the unit FSDP shards and activation checkpointing recomputes). Only ``forward`` is compiled, so
    the hooks FSDP registers on the module run eagerly around it, and parameter names do not change.

    All blocks share one code object (``Block.forward``) and so one cache of compiled variants, limited by
    ``torch._dynamo.config.recompile_limit`` (8); past it every later call runs uncompiled. A run needs
    two: the student's (two crop groups, drop path) and the teacher's (the global crops). The block inputs
    keep one dtype (:meth:`VisionTransformer.prepare_tokens`), their batch and sequence dims are marked
    dynamic (the high-resolution stage and other batch sizes reuse the graphs), and the in-training probe
    runs its forward passes eagerly (:func:`eager_blocks`). tests/test_ssl_compile_recompiles.py counts
    the graphs.
    ``backend``: torch.compile's (``aot_eager`` stands in on CPU in the tests)."""
    for blk in model.blocks:
        blk.forward = torch.compile(blk.forward, backend=backend)
    model.compiled_blocks = True


def eager_blocks() -> Any:
    """A context in which compiled blocks run eagerly, compiling nothing (the in-training probe: another
    batch, no autocast, eval mode; a compile there would stall rank 0 while the other ranks wait)."""
    return torch.compiler.set_stance("force_eager")


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


def set_pos_embed_interpolation(model: VisionTransformer, offset: float, antialias: bool) -> None:
    """Switch ``model`` to another positional-embedding resize (e.g. that of imported weights), in its cfg too."""
    model.pos_embed_offset, model.pos_embed_antialias = float(offset), bool(antialias)
    if model.cfg is not None:
        model.cfg = {**model.cfg, "pos_embed_offset": model.pos_embed_offset, "pos_embed_antialias": model.pos_embed_antialias}


def adapt_state_dict(state: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """Make a backbone state dict loadable into ``model``.

    Positional embeddings stored for another grid (e.g. DINOv2 hub weights, 37x37 for 518 px) are kept
    at their resolution: ``model.pos_embed`` is re-created with that shape (it is interpolated to the
    crop size at every forward anyway), so no information is lost. ``mask_token`` is shaped (1, D).
    Call this BEFORE building an optimizer over the model's parameters.
    """
    state = dict(state)
    pe = state.get("pos_embed")
    if pe is not None and pe.shape != model.pos_embed.shape:
        if pe.ndim != 3 or pe.shape[-1] != model.embed_dim or math.isqrt(pe.shape[1] - 1) ** 2 != pe.shape[1] - 1:
            raise ValueError(f"pos_embed of shape {tuple(pe.shape)} does not fit a ViT of width {model.embed_dim}")
        model.pos_embed = nn.Parameter(torch.zeros(pe.shape, dtype=model.pos_embed.dtype, device=model.pos_embed.device))
    mt = state.get("mask_token")
    if mt is not None and mt.numel() == model.mask_token.numel():
        state["mask_token"] = mt.reshape(model.mask_token.shape)
    return state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
