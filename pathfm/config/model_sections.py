"""What is trained and how: the ``model``, head (``dino_head``, ``ibot_head``), ``loss``, ``optim`` and
``highres`` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pathfm.config.strict import StrictModel

ARCHS = ("vit_pico", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_giant")


class ModelConfig(StrictModel):
    arch: Literal["vit_pico", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_giant"] = "vit_small"
    patch_size: Literal[14, 16] = 14
    n_registers: int = Field(0, ge=0, le=16)
    layerscale: float | None = Field(1e-5, description="LayerScale init; null disables it")
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    ffn: Literal["mlp", "swiglu"] = "mlp"
    attention: Literal["auto", "sdpa", "xformers"] = "auto"
    init_from: str | None = Field(
        None,
        description="checkpoint, exported backbone, DINOv2 hub / timm state dict, or a name like dinov2:vitg14",
    )
    init_ignore: list[str] = Field(
        default_factory=list,
        description="glob patterns of weight names init_from may leave missing or unused (loading is strict)",
    )
    pos_embed_offset: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="DINOv2 pos-embed resize offset; null: as the weights were trained (0.1, DINOv2 _reg4: 0.0)",
    )
    pos_embed_antialias: bool | None = Field(
        None, description="antialias the pos-embed resize; null: as the weights were trained (False, _reg4: True)"
    )
    activation_checkpointing: bool = Field(
        False, description="recompute each transformer block in the backward pass (torch.utils.checkpoint): "
        "activations of ~one block instead of all; ~30% more compute (docs/large-backbones.md)")
    compile: bool = Field(False, description="torch.compile the backbone (docs/large-backbones.md)")


# how the model runs, not what it is: a checkpoint resumes with these changed
EXECUTION_ONLY_MODEL_FIELDS = ("activation_checkpointing", "compile")


class HeadConfig(StrictModel):
    n_prototypes: int = Field(65536, ge=2)
    hidden_dim: int = Field(2048, ge=8)
    bottleneck_dim: int = Field(256, ge=8)
    n_layers: int = Field(3, ge=1)


class LossConfig(StrictModel):
    dino_weight: float = Field(1.0, ge=0.0)
    ibot_weight: float = Field(1.0, ge=0.0)
    separate_ibot_head: bool = False
    centering: Literal["sinkhorn_knopp", "softmax"] = "sinkhorn_knopp"
    sinkhorn_iterations: int = Field(3, ge=1)
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    student_temp: float = Field(0.1, gt=0.0)
    koleo_weight: float = Field(0.0, ge=0.0, description="DINOv2 baseline: 0.1")
    kde_weight: float = Field(0.05, ge=0.0, description="Midnight KDE regulariser; 0 switches it off")
    kde_kappa: float = Field(5.0, gt=0.0)
    mask_probability: float = Field(0.5, ge=0.0, le=1.0)
    mask_ratio: tuple[float, float] = (0.1, 0.5)


class OptimConfig(StrictModel):
    steps: int = Field(100, ge=1, description="optimizer steps of this stage")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step (Midnight: 2)")
    base_lr: float = Field(4e-3, gt=0.0)
    lr_scaling: Literal["sqrt_wrt_1024", "none"] = "sqrt_wrt_1024"
    min_lr: float = Field(1e-6, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.04, ge=0.0)
    weight_decay_end: float = Field(0.4, ge=0.0)
    momentum_teacher: float = Field(0.992, ge=0.0, le=1.0)
    momentum_teacher_end: float = Field(1.0, ge=0.0, le=1.0)
    teacher_temp_warmup: float = Field(0.04, gt=0.0)
    teacher_temp: float = Field(0.07, gt=0.0)
    teacher_temp_warmup_steps: int = Field(30, ge=0)
    layerwise_decay: float = Field(0.9, gt=0.0, le=1.0)
    patch_embed_lr_mult: float = Field(0.2, ge=0.0)
    freeze_last_layer_steps: int = Field(0, ge=0)
    clip_grad: float | None = Field(3.0, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)


class HighResConfig(StrictModel):
    """High-resolution post-training (Midnight-92k/392): same physical area at twice the pixel density."""

    enabled: bool = False
    steps: int = Field(20, ge=1)
    tile_size: int = Field(512, ge=32)
    mpp_factor: float = Field(0.5, gt=0.0, description="multiplies every entry of data.mpps")
    global_size: int = Field(392, ge=14)
    local_size: int = Field(168, ge=14)
    base_lr: float = Field(1e-4, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1, description="micro-steps per optimizer step; null: optim.grad_accum")
