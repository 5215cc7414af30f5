"""Per-GPU memory for the chosen strategy and checkpointing, and the refusal of a trial that cannot fit."""

from __future__ import annotations

import pytest

from pathfm.config import load_config
from pathfm.errors import ConfigError
from pathfm.ssl.memory import (
    GIB,
    block_bytes_per_token,
    check_fits,
    estimate_memory,
    largest_fitting_batch,
    largest_shard_unit,
    parameter_counts,
    tokens_per_crop,
    training_memory,
)
from pathfm.backbone.vit import ARCH_SPECS
from pathfm.ssl.step import build_student_teacher

GIANT = ["data.slides=samples/wsi"]  # the preset's batch: 12 per GPU (32 does not fit 80 GB: ~91.5 GiB)


def test_fsdp_divides_the_parameter_terms_and_adds_the_gathered_unit():
    cfg = load_config("smoke", ["loss.separate_ibot_head=true"])
    total, trainable, teacher = parameter_counts(cfg)
    ddp1 = estimate_memory(cfg, 1)
    fsdp = estimate_memory(cfg, 4, "fsdp")
    ceil4 = lambda n: -(-n // 4)  # noqa: E731
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer, fsdp.teacher) == (
        ceil4(4 * total), ceil4(4 * trainable), ceil4(8 * trainable), ceil4(4 * teacher))
    assert (fsdp.activations, fsdp.heads) == (ddp1.activations, ddp1.heads)
    # the largest unit is the largest of a block, the rest of the backbone and each head of the built model
    student, _ = build_student_teacher(cfg)
    numel = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    blocks = [numel(b) for b in student.backbone.blocks]
    unit = max(blocks + [numel(student.backbone) - sum(blocks), numel(student.dino_head), numel(student.ibot_head)])
    assert largest_shard_unit(cfg) == unit
    assert fsdp.gathered == 2 * unit * 4 + 4 * unit  # fp32 compute in the smoke preset
    assert estimate_memory(cfg, 1, "fsdp").gathered == 0  # one process: nothing is sharded or gathered


def test_activation_checkpointing_keeps_block_inputs_and_one_block():
    cfg = load_config("smoke", ["run.precision=bf16"])
    plain = estimate_memory(cfg)
    ckpt = estimate_memory(cfg, activation_checkpointing=True)
    spec, c, m = ARCH_SPECS[cfg.model.arch], cfg.data.crops, cfg.model
    tokens = cfg.data.batch_size * (c.n_global * tokens_per_crop(c.global_size, m.patch_size, m.n_registers)
                                    + c.n_local * tokens_per_crop(c.local_size, m.patch_size, m.n_registers))
    block = block_bytes_per_token(spec.embed_dim, spec.num_heads, m.ffn, bool(m.layerscale), 2)
    outside = 4 * spec.embed_dim + 3 * m.patch_size**2 * 2
    assert plain.activations == tokens * (spec.depth * block + outside)
    # every block's fp32 input (the residual stream), one block recomputed, what lies outside the blocks
    assert ckpt.activations == tokens * (spec.depth * spec.embed_dim * 4 + block + outside)
    # under multi-process fsdp with bf16 parameters the residual stream (and so each kept input) stays fp32
    sharded = estimate_memory(cfg, 2, "fsdp", activation_checkpointing=True)
    assert sharded.activations == tokens * (spec.depth * spec.embed_dim * 4 + block + outside)
    assert ckpt.activations < plain.activations / 2
    on = load_config("smoke", ["run.precision=bf16", "model.activation_checkpointing=true"])
    assert estimate_memory(on).activations == ckpt.activations


def test_the_giant_recipe_fits_80_gb_with_the_chosen_settings_and_is_refused_on_40():
    cfg = load_config("midnight_vitg14", GIANT + ["run.gpu_memory_gib=80"])
    est, strategy = training_memory(cfg, 32)
    assert strategy == "fsdp"  # auto: vit_giant is sharded on a GPU
    assert est.total < 0.9 * 80 * GIB  # 10 % headroom for fragmentation
    assert check_fits(cfg, 32).total == est.total
    small = load_config("midnight_vitg14", GIANT + ["run.gpu_memory_gib=40"])
    with pytest.raises(ConfigError, match="does not fit 40.0 GiB") as err:
        check_fits(small, 32, where="arm full")
    message = str(err.value)
    assert message.startswith("arm full: ") and "model.activation_checkpointing=true" in message
    assert "data.batch_size=" in message and "run.strategy=fsdp" not in message  # already sharded
    # forced DDP: the fix names fsdp, with the estimate it would give
    ddp = load_config("midnight_vitg14", GIANT + ["run.gpu_memory_gib=60", "run.strategy=ddp"])
    with pytest.raises(ConfigError, match=r"run.strategy=fsdp \(~\d+\.\d GiB\)"):
        check_fits(ddp, 32)
    # the high-resolution stage's batch has its own key
    with pytest.raises(ConfigError, match=r"highres.batch_size=\d+ \(with optim.grad_accum"):
        check_fits(load_config("midnight_vitg14", GIANT + ["run.gpu_memory_gib=30"]).highres_stage(), 32,
                   batch_key="highres.batch_size")
    # no capacity known (no run.gpu_memory_gib, no CUDA device here): nothing is refused
    check_fits(load_config("midnight_vitg14", GIANT), 32)


def test_largest_fitting_batch_is_linear_in_the_batch_terms():
    cfg = load_config("smoke", [])
    est = estimate_memory(cfg)
    static = est.total - est.activations - est.heads
    per_image = (est.activations + est.heads) / cfg.data.batch_size
    assert largest_fitting_batch(est, cfg.data.batch_size, est.total) == cfg.data.batch_size
    assert largest_fitting_batch(est, cfg.data.batch_size, int(static + 3.5 * per_image)) == 3
    assert largest_fitting_batch(est, cfg.data.batch_size, static // 2) == 0


def test_train_dry_run_prints_the_estimate_and_refuses_what_cannot_fit(tmp_path, monkeypatch, capsys):
    from pathfm.cli import main

    monkeypatch.setenv("WORLD_SIZE", "4")  # as under torchrun with 4 processes
    assert main(["train", "smoke", "run.strategy=fsdp", "--dry-run", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "memory per GPU (fsdp, 4 process(es), activation checkpointing off): ~" in out
    assert not (tmp_path / "run").exists()
    assert main(["train", "smoke", "run.gpu_memory_gib=0.01", "--dry-run", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "stage main: estimated" in err and "does not fit 0.0 GiB (run.gpu_memory_gib)" in err
    assert "run.strategy=fsdp (~" in err and "model.activation_checkpointing=true (~" in err


def test_a_sweep_dry_run_refuses_a_gpu_trial_that_cannot_fit_before_any_step():
    import io

    from pathfm.sweeps.runner import preflight
    from pathfm.sweeps.spec import expand_trials, spec_from_dict

    spec = spec_from_dict({"name": "toobig", "base": "smoke",
                           "overrides": {"data.assume_mpp": 0.5, "run.gpu_memory_gib": 0.01},
                           "space": {"kde_weight": {"grid": [0.0, 0.05]}}, "eval": {"enabled": False},
                           "objective": {"metric": "loss", "mode": "min"}, "resources": {"cpu": 1, "gpu": 1}})
    out = io.StringIO()
    with pytest.raises(ConfigError, match=r"trial 0: estimated .* does not fit 0.0 GiB .*fixes: "):
        preflight(spec, expand_trials(spec), out=out)
    assert "one CPU step" not in out.getvalue()  # refused before the measured step
