"""Name-driven parameter groups: layer-wise lr decay, patch-embed multiplier, no decay on 1-D params."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pathfm.config import OptimConfig
from pathfm.ssl.param_groups import apply_schedule, layer_id, param_groups


def _named(shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, nn.Parameter]]:
    return [(n, nn.Parameter(torch.zeros(s))) for n, s in shapes.items()]


SHAPES = {
    "backbone.cls_token": (1, 1, 8),
    "backbone.pos_embed": (1, 5, 8),
    "backbone.mask_token": (1, 8),
    "backbone.register_tokens": (1, 2, 8),
    "backbone.patch_embed.proj.weight": (8, 3, 2, 2),
    "backbone.patch_embed.proj.bias": (8,),
    "backbone.blocks.0.norm1.weight": (8,),
    "backbone.blocks.0.attn.qkv.weight": (24, 8),
    "backbone.blocks.0.ls1.gamma": (8,),
    "backbone.blocks.2.mlp.fc1.weight": (16, 8),
    "backbone.blocks.2.mlp.fc1.bias": (16,),
    "backbone.norm.weight": (8,),
    "dino_head.mlp.0.weight": (8, 8),
    "dino_head.last_layer.parametrizations.weight.original0": (10, 1),
    "dino_head.last_layer.parametrizations.weight.original1": (10, 8),
}


def _lookup(groups: list[dict]) -> dict[str, dict]:
    return {name: g for g in groups for name in g["names"]}


def test_multipliers_per_parameter() -> None:
    cfg = OptimConfig(layerwise_decay=0.5, patch_embed_lr_mult=0.2)
    by_name = _lookup(param_groups(_named(SHAPES), n_blocks=3, optim_cfg=cfg))
    L = 3
    expect_lr = {
        "backbone.cls_token": 0.5 ** (L + 1),
        "backbone.pos_embed": 0.5 ** (L + 1),
        "backbone.mask_token": 0.5 ** (L + 1),
        "backbone.register_tokens": 0.5 ** (L + 1),
        "backbone.patch_embed.proj.weight": 0.2 * 0.5 ** (L + 1),
        "backbone.blocks.0.attn.qkv.weight": 0.5**L,
        "backbone.blocks.2.mlp.fc1.weight": 0.5**1,
        "backbone.norm.weight": 1.0,
        "dino_head.mlp.0.weight": 1.0,
    }
    for name, mult in expect_lr.items():
        assert by_name[name]["lr_mult"] == pytest.approx(mult), name
    no_decay = {"backbone.patch_embed.proj.bias", "backbone.blocks.0.norm1.weight", "backbone.blocks.0.ls1.gamma",
                "backbone.blocks.2.mlp.fc1.bias", "backbone.norm.weight"}
    for name in SHAPES:
        assert by_name[name]["wd_mult"] == (0.0 if name in no_decay else 1.0), name
        assert by_name[name]["is_last_layer"] == ("last_layer" in name), name


def test_groups_are_fused_and_frozen_params_skipped() -> None:
    named = _named(SHAPES)
    named[0][1].requires_grad_(False)
    groups = param_groups(named, n_blocks=3, optim_cfg=OptimConfig(layerwise_decay=1.0, patch_embed_lr_mult=1.0))
    keys = [(g["lr_mult"], g["wd_mult"], g["is_last_layer"]) for g in groups]
    assert len(keys) == len(set(keys)) == 3  # decay / no decay / last layer
    assert sum(len(g["params"]) for g in groups) == len(SHAPES) - 1
    assert all(len(g["params"]) == len(g["names"]) for g in groups)


def test_apply_schedule_writes_lr_and_wd_and_freezes_last_layer() -> None:
    groups = param_groups(_named(SHAPES), n_blocks=3, optim_cfg=OptimConfig(layerwise_decay=0.5))
    opt = torch.optim.AdamW(groups)
    apply_schedule(opt, {"lr": 1e-3, "last_layer_lr": 0.0, "wd": 0.04, "momentum": 0.99, "teacher_temp": 0.04})
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.0 if g["is_last_layer"] else 1e-3 * g["lr_mult"])
        assert g["weight_decay"] == pytest.approx(0.04 * g["wd_mult"])
    # the extra keys survive an optimizer state_dict round trip (resume)
    opt2 = torch.optim.AdamW(param_groups(_named(SHAPES), n_blocks=3, optim_cfg=OptimConfig(layerwise_decay=0.5)))
    opt2.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_layer_id_handles_prefixes_and_rejects_out_of_range_blocks() -> None:
    assert layer_id("module.backbone.blocks.11.attn.proj.weight", 12) == 12
    assert layer_id("pos_embed", 12) == 0
    assert layer_id("ibot_head.mlp.0.weight", 12) == 13
    with pytest.raises(ValueError, match="n_blocks"):
        layer_id("blocks.4.mlp.fc1.weight", 4)


def test_real_backbone_and_head_names() -> None:
    from pathfm.backbone.vit import build_backbone
    from pathfm.config import HeadConfig, ModelConfig
    from pathfm.ssl.heads import DINOHead

    backbone = build_backbone(ModelConfig(arch="vit_pico", n_registers=2))
    head = DINOHead(backbone.embed_dim, HeadConfig(n_prototypes=32, hidden_dim=16, bottleneck_dim=8))
    named = [(f"backbone.{n}", p) for n, p in backbone.named_parameters()]
    named += [(f"dino_head.{n}", p) for n, p in head.named_parameters()]
    by_name = _lookup(param_groups(named, n_blocks=backbone.depth, optim_cfg=OptimConfig()))
    assert len(by_name) == len(named)
    assert by_name["backbone.blocks.0.ls1.gamma"]["wd_mult"] == 0.0
    assert by_name["backbone.mask_token"]["wd_mult"] == 1.0
    last = [n for n in by_name if by_name[n]["is_last_layer"]]
    assert len(last) == 2 and all(n.startswith("dino_head.last_layer") for n in last)
