"""The ViT backbone and the exported-backbone file format."""

from __future__ import annotations

import pytest
import torch

from pathfm.backbone.backbone_file import export_backbone, load_backbone
from pathfm.backbone.layers import select_attention_backend
from pathfm.backbone.vit import ARCH_SPECS, build_backbone, interpolate_pos_embed
from pathfm.errors import PathfmError

PICO = {"arch": "vit_pico", "patch_size": 14, "drop_path": 0.0}


def _model(**kw):
    torch.manual_seed(0)
    return build_backbone({**PICO, **kw}).eval()


def test_forward_features_shapes_any_crop_size():
    m = _model(n_registers=2)
    for size in (56, 112, 224, 98):
        out = m.forward_features(torch.randn(2, 3, size, size))
        n = (size // 14) ** 2
        assert out["cls"].shape == (2, 96)
        assert out["patch"].shape == (2, n, 96)
        assert out["registers"].shape == (2, 2, 96)
    assert m.embed_dim == 96 and m.patch_size == 14
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m.forward_features(torch.randn(1, 3, 100, 100))


def test_outputs_are_after_final_norm():
    m = _model()
    out = m.forward_features(torch.randn(3, 3, 56, 56))
    # LayerNorm with weight 1 / bias 0 at init: zero mean, unit variance per token
    assert torch.allclose(out["cls"].mean(-1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out["patch"].std(-1, unbiased=False), torch.ones(3, 16), atol=1e-3)


def test_mask_token_replaces_patch_embedding_before_positional_embedding():
    m = _model()
    with torch.no_grad():
        m.mask_token.copy_(torch.randn_like(m.mask_token))
    x = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, [0, 5]] = True
    tokens = m.prepare_tokens(x, masks)
    pos = interpolate_pos_embed(m.pos_embed[:, 1:], (4, 4))[0]
    # masked position = mask token + its positional embedding, whatever the image was
    assert torch.allclose(tokens[0, 1 + 0], m.mask_token[0] + pos[0], atol=1e-6)
    assert torch.allclose(tokens[0, 1 + 5], m.mask_token[0] + pos[5], atol=1e-6)
    unmasked = m.prepare_tokens(x, None)
    assert torch.allclose(tokens[1], unmasked[1])
    assert not torch.allclose(tokens[0, 1], unmasked[0, 1])
    with pytest.raises(ValueError, match="masks of shape"):
        m.prepare_tokens(x, torch.zeros(2, 15, dtype=torch.bool))


def test_pos_embed_interpolation_identity_at_base_grid_and_smooth_elsewhere():
    pe = torch.randn(1, 16 * 16, 8)
    assert interpolate_pos_embed(pe, (16, 16)) is pe
    up = interpolate_pos_embed(pe, (28, 28))
    assert up.shape == (1, 28 * 28, 8)
    # a constant field stays constant under bicubic resizing
    const = torch.ones(1, 16 * 16, 8) * 3.0
    assert torch.allclose(interpolate_pos_embed(const, (8, 12)), torch.full((1, 96, 8), 3.0), atol=1e-5)


def test_multi_crop_list_forward_equals_separate_forwards():
    m = _model(n_registers=1)
    g = torch.randn(4, 3, 112, 112)
    loc = torch.randn(6, 3, 56, 56)
    masks = torch.rand(4, 64, generator=torch.Generator().manual_seed(1)) > 0.6
    joint = m.forward_features_list([g, loc], [masks, None])
    sep_g = m.forward_features(g, masks)
    sep_l = m.forward_features(loc)
    torch.testing.assert_close(joint[0]["patch"], sep_g["patch"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint[1]["cls"], sep_l["cls"], atol=1e-5, rtol=1e-5)
    # an empty group (no local crops) is allowed
    out = m.forward_features_list([g, loc[:0]], [None, None])
    assert out[1]["cls"].shape == (0, 96)


def test_drop_path_is_stochastic_only_in_training():
    m = build_backbone({**PICO, "drop_path": 0.5, "layerscale": None})
    x = torch.randn(4, 3, 56, 56)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    b = m(x)
    assert not torch.allclose(a, b)
    teacher = build_backbone({**PICO, "drop_path": 0.5}, drop_path=0.0).train()
    assert all(blk.drop_path_rate == 0.0 for blk in teacher.blocks)


def test_arch_table_and_swiglu_giant():
    assert ARCH_SPECS["vit_giant"].embed_dim == 1536
    assert ARCH_SPECS["vit_giant"].depth == 40 and ARCH_SPECS["vit_giant"].num_heads == 24
    with torch.device("meta"):
        g = build_backbone({"arch": "vit_giant", "patch_size": 14, "ffn": "swiglu"})
        b = build_backbone({"arch": "vit_base", "patch_size": 16})
    n_g = sum(p.numel() for p in g.parameters())
    assert 1.10e9 < n_g < 1.14e9  # DINOv2 ViT-g/14: ~1.1B parameters
    assert g.blocks[0].mlp.w12.out_features == 2 * 4096
    assert b.pos_embed.shape == (1, 1 + 14 * 14, 768)
    assert 85e6 < sum(p.numel() for p in b.parameters()) < 87e6


def test_attention_backend_selection_respects_environment(monkeypatch):
    assert select_attention_backend("auto", "cpu") == "sdpa"
    assert select_attention_backend("sdpa", "cpu") == "sdpa"
    monkeypatch.setenv("XFORMERS_DISABLED", "1")
    with pytest.raises(PathfmError, match="xformers"):
        select_attention_backend("xformers", "cpu")


def test_export_round_trip(tmp_path):
    m = _model(n_registers=1)
    path = export_backbone(m, tmp_path / "bb.pt", step=7, config_sha="abc")
    loaded, meta = load_backbone(path)
    assert meta["step"] == 7 and meta["config_sha"] == "abc" and meta["model"]["n_registers"] == 1
    x = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(loaded.forward_features(x)["cls"], m.forward_features(x)["cls"])
    assert not loaded.training


def test_load_backbone_rejects_foreign_and_mismatched_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(PathfmError, match="junk.pt"):
        load_backbone(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(PathfmError, match="not a pathfm backbone"):
        load_backbone(foreign)
    with pytest.raises(PathfmError, match="no such file"):
        load_backbone(tmp_path / "missing.pt")
    # weights of a pico ViT declared as a tiny ViT
    path = export_backbone(_model(), tmp_path / "bb.pt")
    obj = torch.load(path, weights_only=True)
    obj["model"]["arch"] = "vit_tiny"
    torch.save(obj, tmp_path / "wrong_arch.pt")
    with pytest.raises(PathfmError, match="do not fit the declared architecture vit_tiny"):
        load_backbone(tmp_path / "wrong_arch.pt")
