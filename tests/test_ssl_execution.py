"""How the backbone runs (model.activation_checkpointing, model.compile) changes nothing it computes."""

from __future__ import annotations

import pytest
import torch

from pathfm.backbone.vit import build_backbone, compile_blocks
from pathfm.config import load_config


def _loss_and_grads(model, images, masks, seed: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # drop path draws from the global RNG
    model.zero_grad(set_to_none=True)
    g, loc = model.forward_features_list(images, masks)
    loss = g["cls"].pow(2).sum() + g["patch"].tanh().sum() + loc["cls"].sin().sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _pico(**overrides):
    cfg = load_config("smoke", [f"model.{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    return build_backbone(cfg.model, drop_path=0.3)  # stochastic depth: recomputation must replay its draws


def test_activation_checkpointing_gives_identical_loss_and_gradients():
    torch.manual_seed(1)
    images = [torch.randn(2, 3, 56, 56), torch.randn(3, 3, 28, 28)]
    masks = [torch.rand(2, 16) < 0.4, None]
    plain, checkpointed = _pico(), _pico(activation_checkpointing="true")
    assert checkpointed.activation_checkpointing and not plain.activation_checkpointing
    loss_a, grads_a = _loss_and_grads(plain, images, masks)
    loss_b, grads_b = _loss_and_grads(checkpointed, images, masks)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    # without grad (the teacher, evaluation) nothing is checkpointed and the output is the same
    plain.eval(), checkpointed.eval()  # no stochastic depth
    with torch.no_grad():
        assert torch.equal(plain.forward_features(images[0])["cls"], checkpointed.forward_features(images[0])["cls"])


@pytest.mark.slow  # inductor compiles each block's forward and backward: minutes on 2 shared cores
@pytest.mark.timeout(300)
def test_compiled_blocks_give_the_eager_loss_and_gradients():
    torch.manual_seed(1)
    images = [torch.randn(2, 3, 56, 56), torch.randn(3, 3, 28, 28)]
    masks = [torch.rand(2, 16) < 0.4, None]
    eager, compiled = _pico(drop_path=0.0), _pico(drop_path=0.0)
    compile_blocks(compiled)
    loss_a, grads_a = _loss_and_grads(eager, images, masks)
    loss_b, grads_b = _loss_and_grads(compiled, images, masks)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)
