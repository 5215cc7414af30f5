"""Golden parity with DINOv2 as published: positional-embedding resize, timm's DINOv2 ports, the hub layout.

Reference models are timm 1.0's ``vit_*_patch14[_reg4]_dinov2`` built with random weights (no download).
Every parameter is redrawn with a scale that makes each block matter (timm initialises LayerScale at
1e-5, which would make the blocks near-identities and the comparison toothless).
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from pathfm.backbone import foreign_weights as fw
from pathfm.backbone.backbone_file import export_backbone, load_backbone
from pathfm.backbone.vit import VisionTransformer, build_backbone, interpolate_pos_embed
from pathfm.config import load_config
from pathfm.errors import ConfigError

TOL = 1e-5


def _dinov2_interpolate_pos_encoding(pos_embed, img_hw, patch, offset, antialias):
    """DINOv2 ``DinoVisionTransformer.interpolate_pos_encoding`` transcribed: it names the image dims
    ``w, h`` in (B, C, w, h) order and hands ``scale_factor=(sx, sy)`` for (w0, h0) to F.interpolate."""
    n = pos_embed.shape[1] - 1
    class_pos, patch_pos = pos_embed[:, 0], pos_embed[:, 1:]
    w, h = img_hw
    w0, h0 = w // patch, h // patch
    m = int(math.sqrt(n))
    kwargs = {"scale_factor": (float(w0 + offset) / m, float(h0 + offset) / m)} if offset else {"size": (w0, h0)}
    patch_pos = F.interpolate(patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2), mode="bicubic", antialias=antialias, **kwargs)
    assert (w0, h0) == patch_pos.shape[-2:]
    return torch.cat((class_pos.unsqueeze(0), patch_pos.permute(0, 2, 3, 1).reshape(1, -1, pos_embed.shape[-1])), dim=1)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_((0.5 if p.ndim < 2 or "token" in name or "pos_embed" in name else 1.0 / math.sqrt(p[0].numel()))
                        * torch.randn(p.shape, generator=g))  # fmt: skip


def _timm(name: str, seed: int, **kw) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False, img_size=kw.pop("img_size", 224), **kw).eval()
    _randomise(model, seed)
    return model


def _timm_tokens(model, x):
    """(cls, patch) of timm's final-normed tokens."""
    with torch.no_grad():
        out = model.forward_features(x)
    return out[:, 0], out[:, model.num_prefix_tokens :]


def _pathfm(embed_dim=384, depth=12, heads=6, **kw) -> VisionTransformer:
    return VisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=heads, attention="sdpa", **kw).eval()


def _load(model: VisionTransformer, state, tmp_path) -> fw.ConvertedWeights:
    converted = fw.convert_state_dict(state, tmp_path / "w.pth")
    fw.check_architecture(converted.state, model, "test")
    fw.load_strict(model, converted.state, "test", kept_init=converted.kept_init)
    return converted


def _assert_same_tokens(pathfm_model, cls_ref, patch_ref, x) -> None:
    with torch.no_grad():
        out = pathfm_model.forward_features(x)
    assert (out["cls"] - cls_ref).abs().max() <= TOL
    assert (out["patch"] - patch_ref).abs().max() <= TOL


# ----------------------------------------------------------------------------- pos-embed resize
@pytest.mark.parametrize("offset, antialias", [(0.1, False), (0.0, True), (0.0, False)])
@pytest.mark.parametrize("img_hw", [(224, 224), (392, 392), (98, 140), (532, 224)])
def test_pos_embed_resize_is_dinov2s_formula(offset, antialias, img_hw):
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    ref = _dinov2_interpolate_pos_encoding(pos, img_hw, 14, offset, antialias)
    grid = (img_hw[0] // 14, img_hw[1] // 14)
    out = interpolate_pos_embed(pos[:, 1:], grid, offset=offset, antialias=antialias)
    assert torch.equal(out, ref[:, 1:])


def test_the_offset_changes_the_result_and_the_model_uses_its_own_setting():
    """The 0.1 kludge is not cosmetic (the 0.07 discrepancy of issue 14), and prepare_tokens applies it."""
    pos = torch.randn(1, 37 * 37, 8, generator=torch.Generator().manual_seed(1))
    kludge = interpolate_pos_embed(pos, (16, 16), offset=0.1)
    plain = interpolate_pos_embed(pos, (16, 16), offset=0.0)
    assert (kludge - plain).abs().max() > 0.05
    model = _pathfm(embed_dim=96, depth=1, heads=3, pos_embed_offset=0.0, pos_embed_antialias=True)
    model.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 37 * 37, 96))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.prepare_tokens(x)[:, 1:]
        ref = model.patch_embed(x) + _dinov2_interpolate_pos_encoding(model.pos_embed, (224, 224), 14, 0.0, True)[:, 1:]
    assert torch.allclose(tokens, ref, atol=1e-6)


def test_resolved_settings_travel_through_export_and_load(tmp_path):
    model = build_backbone({"arch": "vit_pico", "pos_embed_offset": 0.0, "pos_embed_antialias": True})
    assert model.cfg["pos_embed_offset"] == 0.0 and model.cfg["pos_embed_antialias"] is True
    assert build_backbone({"arch": "vit_pico"}).cfg["pos_embed_offset"] == 0.1  # DINOv2's training default
    loaded, _ = load_backbone(export_backbone(model, tmp_path / "b.pt"))
    assert (loaded.pos_embed_offset, loaded.pos_embed_antialias) == (0.0, True)


# ------------------------------------------------------------------------------- golden parity
def test_timm_vit_small_dinov2_loads_into_pathfm_with_identical_tokens(tmp_path):
    ref = _timm("vit_small_patch14_dinov2", seed=2)
    model = _pathfm()
    converted = _load(model, ref.state_dict(), tmp_path)
    assert converted.layout == "timm" and converted.kept_init == ("mask_token",)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    _assert_same_tokens(model, *_timm_tokens(ref, x), x)


def test_timm_vit_small_reg4_dinov2_folded_cls_position_and_registers(tmp_path):
    ref = _timm("vit_small_patch14_reg4_dinov2", seed=4)
    assert ref.pos_embed.shape[1] == 256  # patch positions only: the CLS position lives in cls_token
    model = _pathfm(n_registers=4)
    converted = _load(model, ref.state_dict(), tmp_path)
    assert converted.pos_embed == (0.0, True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    _assert_same_tokens(model, *_timm_tokens(ref, x), x)
    with torch.no_grad():
        regs = ref.forward_features(x)[:, 1:5]
        assert (model.forward_features(x)["registers"] - regs).abs().max() <= TOL


def _hub_layout(timm_state: dict) -> dict:
    """timm's giant state dict renamed to the official hub layout (mlp.w12/w3, mask_token)."""
    out = {k.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3."): v for k, v in timm_state.items()}
    out["mask_token"] = torch.zeros(1, timm_state["cls_token"].shape[-1])
    return out


def test_hub_layout_giant_swiglu_at_reduced_depth(tmp_path):
    ref = _timm("vit_giant_patch14_dinov2", seed=6, depth=2)
    hub = _hub_layout(ref.state_dict())
    assert "blocks.0.mlp.w12.weight" in hub and hub["blocks.0.mlp.w12.weight"].shape[0] == 2 * hub["blocks.0.mlp.w3.weight"].shape[1]
    model = _pathfm(embed_dim=1536, depth=2, heads=24, ffn="swiglu")
    converted = _load(model, hub, tmp_path)
    assert converted.layout == "dinov2" and converted.pos_embed == (0.1, False)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    _assert_same_tokens(model, *_timm_tokens(ref, x), x)


def test_hub_grid_resized_like_timms_dynamic_size_when_settings_agree(tmp_path):
    """A 37x37 hub grid at 224 px: with offset 0 / antialias (the _reg4 setting, and timm's resize) the
    tokens equal timm's dynamic-size model, an independent implementation of the same resize."""
    ref = _timm("vit_small_patch14_reg4_dinov2", seed=8, img_size=518, dynamic_img_size=True, depth=2)
    model = _pathfm(depth=2, n_registers=4)
    converted = _load(model, ref.state_dict(), tmp_path)
    fw.apply_pos_embed_settings(model, None, converted.pos_embed)
    assert model.pos_embed.shape[1] == 1 + 37 * 37
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    _assert_same_tokens(model, *_timm_tokens(ref, x), x)


# ------------------------------------------------------------------------------- strict loading
def _pico_reg4_timm_state() -> dict:
    ref = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, embed_dim=96, depth=4,
                            num_heads=3)  # fmt: skip
    return ref.state_dict()


def test_unused_or_missing_weights_fail_unless_named_in_init_ignore(tmp_path):
    state = _pico_reg4_timm_state()
    converted = fw.convert_state_dict({**state, "head.weight": torch.zeros(10, 96)}, tmp_path / "w.pth")
    model = _pathfm(embed_dim=96, depth=4, heads=3, n_registers=4)
    with pytest.raises(ConfigError, match=r"1 unused: head.weight.*model.init_ignore"):
        fw.load_strict(model, converted.state, "w.pth", kept_init=converted.kept_init)
    n = fw.load_strict(model, converted.state, "w.pth", ignore=["head.*"], kept_init=converted.kept_init)
    assert n == len(model.state_dict()) - 1  # everything but mask_token, which timm's layout lacks
    partial = {k: v for k, v in converted.state.items() if k != "norm.bias"}
    with pytest.raises(ConfigError, match=r"1 missing: norm.bias"):
        fw.load_strict(model, partial, "w.pth", kept_init=converted.kept_init)
    with pytest.raises(ConfigError, match=r"1 missing: mask_token"):  # a DINOv2-layout file must hold it
        fw.load_strict(model, converted.state, "w.pth", ignore=["head.*"])
    bad = {**converted.state, "norm.weight": torch.ones(95)}
    with pytest.raises(ConfigError, match=r"1 mis-shaped: norm.weight \(95,\) vs \(96,\)"):
        fw.load_strict(model, bad, "w.pth", ignore=["head.*"], kept_init=converted.kept_init)
    before = model.norm.weight.detach().clone()
    assert fw.load_strict(model, bad, "w.pth", ignore=["head.*", "norm.weight"], kept_init=converted.kept_init) == n - 1
    assert torch.equal(model.norm.weight, before)  # an ignored mis-shaped weight keeps what the model had


def test_a_different_architecture_names_the_fields_to_set(tmp_path):
    converted = fw.convert_state_dict(_pico_reg4_timm_state(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"n_registers 4 \(config: 0\).*set model.n_registers=4"):
        fw.check_architecture(converted.state, _pathfm(embed_dim=96, depth=4, heads=3), "w.pth")
    with pytest.raises(ConfigError, match=r"set model.arch=vit_pico"):
        fw.check_architecture(converted.state, _pathfm(embed_dim=96, depth=2, heads=3, n_registers=4), "w.pth")


def test_dinov2_names_resolve_from_the_weights_dir_or_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(fw.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ConfigError, match=r"dinov2_vitg14_pretrain.pth not found.*https://dl.fbaipublicfiles.com/dinov2/"
                                          r"dinov2_vitg14/dinov2_vitg14_pretrain.pth into .*torch_home/hub/checkpoints"):  # fmt: skip
        fw.resolve_weights_source("dinov2:vitg14")
    with pytest.raises(ConfigError, match="unknown DINOv2 model"):
        fw.resolve_weights_source("dinov2:vitx14")
    (tmp_path / "dinov2_vits14_reg4_pretrain.pth").write_bytes(b"")
    assert fw.resolve_weights_source("dinov2:vits14_reg4") == tmp_path / "dinov2_vits14_reg4_pretrain.pth"


def test_training_from_a_timm_register_model_loads_strictly_and_exports_its_resize(tmp_path):
    """init_from a timm reg4 file: all tensors loaded (reported), the _reg4 resize carried to the export."""
    from pathfm.ssl.trainer import train

    weights = tmp_path / "timm_reg4.pth"
    torch.save(_pico_reg4_timm_state(), weights)
    overrides = ["data.batch_size=2", "data.crops.n_local=2", "run.progress=false", "optim.steps=1",
                 "optim.warmup_steps=0", "run.checkpoint_every=1", "model.n_registers=4",
                 f"model.init_from={weights}"]  # fmt: skip
    result = train(load_config("smoke", overrides), tmp_path / "run")
    backbone, meta = load_backbone(result.teacher_path)
    assert (backbone.pos_embed_offset, backbone.pos_embed_antialias) == (0.0, True)
    assert (meta["model"]["pos_embed_offset"], meta["model"]["pos_embed_antialias"]) == (0.0, True)
    with pytest.raises(ConfigError, match="set model.n_registers=4"):
        train(load_config("smoke", overrides[:-2] + [f"model.init_from={weights}"]), tmp_path / "run2")


def test_train_dry_run_resolves_the_midnight_init_or_names_the_missing_file(tmp_path, monkeypatch, capsys):
    from pathfm.cli import main

    monkeypatch.setenv(fw.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert main(["train", "midnight_vitg14", "--dry-run", "--run-dir", str(tmp_path / "run")]) == 2
    assert "dinov2_vitg14_pretrain.pth not found" in capsys.readouterr().err
    (tmp_path / "dinov2_vitg14_pretrain.pth").write_bytes(b"")
    assert main(["train", "midnight_vitg14", "--dry-run", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"init dinov2:vitg14: {tmp_path / 'dinov2_vitg14_pretrain.pth'}" in out
    assert "stage highres" in out and not (tmp_path / "run").exists()
