"""DINO head: shapes, weight-normalised prototypes with trainable gain 1, deepcopy/state_dict for the EMA teacher."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pathfm.config import HeadConfig
from pathfm.ssl.heads import DINOHead

CFG = HeadConfig(n_prototypes=50, hidden_dim=32, bottleneck_dim=12, n_layers=3)


def test_forward_equals_the_formula() -> None:
    torch.manual_seed(0)
    head = DINOHead(20, CFG)
    x = torch.randn(6, 20)
    z = F.normalize(head.mlp(x), dim=-1)
    v = head.last_layer.parametrizations.weight.original1
    g = head.gain
    expected = z @ (g * v / v.norm(dim=1, keepdim=True)).t()
    out = head(x)
    assert out.shape == (6, 50)
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.detach().abs().max().item() <= 1.0 + 1e-5  # gain 1 and unit vectors: cosine logits
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 12]


def test_gain_initialised_to_one_trainable_and_named_last_layer() -> None:
    head = DINOHead(20, CFG)
    assert torch.equal(head.gain, torch.ones(50, 1))
    names = [n for n, _ in head.named_parameters() if "last_layer" in n]
    assert len(names) == 2
    assert all(p.requires_grad for n, p in head.named_parameters())
    assert not any("bias" in n for n in names)
    head(torch.randn(3, 20)).sum().backward()
    assert head.gain.grad is not None and float(head.gain.grad.abs().sum()) > 0


def test_deepcopy_teacher_is_independent_and_follows_ema() -> None:
    torch.manual_seed(1)
    student = DINOHead(20, CFG)
    teacher = copy.deepcopy(student)
    x = torch.randn(4, 20)
    assert torch.equal(student(x), teacher(x))
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
        assert not torch.allclose(student(x), teacher(x))
        for pt, ps in zip(teacher.parameters(), student.parameters()):
            pt.mul_(0.0).add_(ps)  # EMA with momentum 0
        assert torch.allclose(student(x), teacher(x))
    assert all(pt.data_ptr() != ps.data_ptr() for pt, ps in zip(teacher.parameters(), student.parameters()))


def test_state_dict_round_trip_and_single_layer_variant() -> None:
    a, b = DINOHead(20, CFG), DINOHead(20, CFG)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 20)
    assert torch.equal(a(x), b(x))
    one = DINOHead(20, HeadConfig(n_prototypes=8, hidden_dim=16, bottleneck_dim=8, n_layers=1))
    assert one(x).shape == (2, 8) and len(one.mlp) == 1
