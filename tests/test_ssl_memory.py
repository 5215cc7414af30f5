"""The per-device memory estimate: its parameter, gradient, optimizer and teacher terms are the counts of
the model the trainer builds; the activation and head terms follow the crop, batch and precision."""

from __future__ import annotations

import pytest

from pathfm.config import load_config
from pathfm.ssl.memory import (block_bytes_per_token, estimate_memory, masked_patches, parameter_counts,
                               tokens_per_crop)
from pathfm.ssl.step import build_student_teacher


def test_parameter_terms_are_the_counts_of_the_built_model():
    cfg = load_config("smoke", ["loss.separate_ibot_head=true"])
    student, teacher = build_student_teacher(cfg)
    n_student = sum(p.numel() for p in student.parameters())
    n_trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    n_teacher = sum(p.numel() for p in teacher.parameters())
    assert parameter_counts(cfg) == (n_student, n_trainable, n_teacher)
    est = estimate_memory(cfg)
    assert (est.weights, est.gradients, est.optimizer, est.teacher) == (
        4 * n_student, 4 * n_trainable, 8 * n_trainable, 4 * n_teacher)
    # DDP keeps its gradient buckets beside the gradients
    assert estimate_memory(cfg, world_size=2).gradients == 8 * n_trainable


def test_activation_and_head_terms_follow_batch_crops_and_precision():
    cfg = load_config("smoke", ["run.precision=bf16"])
    base = estimate_memory(cfg)
    double = estimate_memory(load_config("smoke", ["run.precision=bf16", f"data.batch_size={2 * cfg.data.batch_size}"]))
    assert double.activations == 2 * base.activations and double.heads == pytest.approx(2 * base.heads, rel=1e-6)
    fp32 = estimate_memory(load_config("smoke", ["run.precision=fp32"]))
    assert 1.7 * base.activations < fp32.activations < 2 * base.activations  # LayerNorm inputs are fp32 in both
    assert (base.casts, fp32.casts) == (2 * parameter_counts(cfg)[1], 0)  # autocast's bf16 weight copies
    c, m = cfg.data.crops, cfg.model
    assert tokens_per_crop(224, 14, 4) == 16 * 16 + 1 + 4
    tokens = cfg.data.batch_size * (c.n_global * tokens_per_crop(c.global_size, m.patch_size, m.n_registers)
                                    + c.n_local * tokens_per_crop(c.local_size, m.patch_size, m.n_registers))
    from pathfm.backbone.vit import ARCH_SPECS

    spec = ARCH_SPECS[m.arch]
    per_token = block_bytes_per_token(spec.embed_dim, spec.num_heads, m.ffn, bool(m.layerscale), 2)
    assert per_token == spec.embed_dim * 42 + 16 + 4 * spec.num_heads  # MLP block, LayerScale (measured: 42.5)
    assert base.activations == tokens * (spec.depth * per_token + 4 * spec.embed_dim + 3 * m.patch_size**2 * 2)
    # masked patches: B x n_global x p x mean ratio x patches per global crop
    lo, hi = cfg.loss.mask_ratio
    patches = (c.global_size // m.patch_size) ** 2
    assert masked_patches(cfg) == pytest.approx(cfg.data.batch_size * c.n_global * cfg.loss.mask_probability
                                                * (lo + hi) / 2 * patches)
    assert base.total == sum(v for k, v in base.as_dict().items() if k != "total")


def test_the_giant_recipe_does_not_fit_one_80_gb_gpu_without_sharding_at_batch_32():
    cfg = load_config("midnight_vitg14", ["data.slides=samples/wsi", "data.batch_size=32"])
    est = estimate_memory(cfg, world_size=32)
    # 1.1 B parameters x 16 bytes (weights, grads, AdamW) + teacher, before any activation
    static = est.weights + est.gradients + est.optimizer + est.teacher
    assert 16e9 < static < 30e9
    assert est.total > 80e9


def test_peak_memory_restarts_at_reset_so_a_process_training_twice_reports_each_runs_own_peak():
    """A process that trains several times (a notebook, this test session) must report each run's own peak
    resident set size, not the largest of the process's earlier runs (Linux: VmHWM, reset by clear_refs)."""
    import numpy as np
    import torch

    from pathfm.ssl.runtime import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    before = peak_memory_mb(cpu)
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
    high = peak_memory_mb(cpu)
    assert high >= before + 250, (before, high)
    del block
    reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) <= high - 200, (high, peak_memory_mb(cpu))
