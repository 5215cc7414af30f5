"""The training-health diagnostics: pure functions against float64 loops, and the collapse they detect."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pathfm.config import HeadConfig, ModelConfig
from pathfm.ssl.centering import sinkhorn_knopp
from pathfm.ssl.diagnostics import (
    dino_ce_per_pair,
    layerscale_magnitude,
    logit_spread,
    max_prototype_cosine,
    mean_entropy,
    mean_pairwise_cosine,
    softmax_entropy,
)
from pathfm.backbone.vit import build_backbone
from pathfm.ssl.heads import DINOHead


def test_entropy_against_a_float64_loop_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, 33, generator=g) * 3, dim=-1)
    ref = sum(-sum(float(v) * math.log(float(v)) for v in row.double()) for row in p) / 7
    assert mean_entropy(p).item() == pytest.approx(ref, rel=1e-6)
    assert mean_entropy(torch.full((4, 256), 1 / 256)).item() == pytest.approx(math.log(256), rel=1e-6)
    assert mean_entropy(torch.eye(5)).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(mean_entropy(torch.zeros(0, 8)).item())


def test_softmax_entropy_is_the_entropy_of_the_tempered_softmax():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
    assert softmax_entropy(logits, 0.1).item() == pytest.approx(mean_entropy(torch.softmax(logits / 0.1, -1)).item(), rel=1e-5)
    assert softmax_entropy(logits, 0.1).item() < softmax_entropy(logits, 1.0).item()  # sharper -> lower


def test_spread_and_cosine():
    rows = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert logit_spread(rows, dim=0).item() == 0.0  # identical images: nothing left after centering
    assert logit_spread(rows, dim=1).item() == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.ones(5, 4) * torch.arange(1, 6)[:, None]).item() == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(4)).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(2)).double()
    z = F.normalize(x, dim=-1)
    ref = sum(float(z[i] @ z[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    assert mean_pairwise_cosine(x.float()).item() == pytest.approx(ref, abs=1e-6)


def test_max_prototype_cosine_reads_the_head_geometry():
    torch.manual_seed(0)
    head = DINOHead(32, HeadConfig(n_prototypes=50, hidden_dim=64, bottleneck_dim=16))
    with torch.no_grad():
        head.gain.mul_(torch.linspace(0.5, 2.0, 50)[:, None])  # the measure must not depend on the gains
    x = torch.randn(12, 32)
    z = head.bottleneck(x)
    w = F.normalize(head.last_layer.parametrizations.weight.original1, dim=-1)
    ref = (z @ w.t()).amax(-1).mean().item()
    assert max_prototype_cosine(head(x), head.gain).item() == pytest.approx(ref, rel=1e-5)


def test_layerscale_magnitude():
    assert layerscale_magnitude(build_backbone(ModelConfig(arch="vit_pico", layerscale=1e-5))).item() == pytest.approx(1e-5)
    assert layerscale_magnitude(build_backbone(ModelConfig(arch="vit_pico", layerscale=None))) is None


def test_ce_per_pair_undoes_the_weight():
    assert dino_ce_per_pair({"dino_local": 4.0, "dino_global": 1.0}, 0.5) == pytest.approx(10.0)
    assert math.isnan(dino_ce_per_pair({"dino_local": 0.0, "dino_global": 0.0}, 0.0))


def test_layerscale_1e5_init_gives_exactly_uniform_sinkhorn_targets():
    """The measured start of the collapse: with LayerScale 1e-5 every image has the same teacher CLS, so the
    Sinkhorn-Knopp targets are uniform (entropy ln K); without LayerScale they carry information."""
    torch.manual_seed(0)
    images = torch.randn(16, 3, 56, 56)
    head_cfg = HeadConfig(n_prototypes=64, hidden_dim=64, bottleneck_dim=32)
    entropies = {}
    for ls in (1e-5, None):
        torch.manual_seed(0)
        backbone = build_backbone(ModelConfig(arch="vit_pico", layerscale=ls, drop_path=0.0)).eval()
        head = DINOHead(backbone.embed_dim, head_cfg)
        with torch.no_grad():
            cls = backbone.forward_features(images)["cls"]
            entropies[ls] = mean_entropy(sinkhorn_knopp(head(cls), 0.04)).item()
            if ls == 1e-5:
                assert mean_pairwise_cosine(cls).item() > 0.9999
    assert entropies[1e-5] == pytest.approx(math.log(64), abs=1e-3)
    assert entropies[None] < math.log(64) - 0.3
