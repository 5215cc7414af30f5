"""Per-device memory of one training step, estimated from the config before any GPU time is spent.

    weights      = P_student x 4                    fp32 master weights (bf16/fp16 autocast casts on the fly)
    gradients    = P_trainable x 4                  (+ the same again for DDP's gradient buckets, world > 1)
    optimizer    = P_trainable x 8                  AdamW exp_avg and exp_avg_sq, fp32
    teacher      = P_teacher x 4                    the EMA teacher, fp32
    activations  = L x T x D x c                    saved for the student's backward; T = tokens of every crop of
                                                    the micro-batch, c = 34 bytes (16-bit) / 68 (fp32) per token,
                                                    width and layer: the transformer-layer count of Korthikanti et
                                                    al. 2022 (MLP ratio 4) without the attention-score term, which
                                                    SDPA's memory-efficient kernels do not store
    heads        = R_s x (4 H + 2 b + 8 K) + R_t x 8 K    student head activations and logits / log-softmax
                                                    (fp32) on R_s rows (CLS of every crop + masked patches), and
                                                    the teacher's logits and targets on R_t rows (global CLS +
                                                    masked patches)

P counts come from the model built on the meta device (no memory, exact), the rest from the crop sizes,
batch and mask settings. It is an estimate: allocator fragmentation, the CUDA context (~0.5-1 GiB) and
temporary buffers are not modelled, so leave headroom. Not yet checked against a GPU's measured peak
(``benchmarks/gpu_check.py`` prints both when run on one).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by term."""

    weights: int
    gradients: int
    optimizer: int
    teacher: int
    activations: int
    heads: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.teacher + self.activations + self.heads

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "teacher": self.teacher, "activations": self.activations, "heads": self.heads, "total": self.total}

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.as_dict().items() if k != "total")
        return f"~{self.total / GIB:.1f} GiB per device ({parts} GiB)"


def parameter_counts(cfg) -> tuple[int, int, int]:
    """(student parameters, trainable student parameters, teacher parameters) of the model ``cfg`` builds,
    counted on the meta device."""
    import torch

    from pathfm.ssl.step import build_student_teacher

    with torch.device("meta"):
        student, teacher = build_student_teacher(cfg)
    total = sum(p.numel() for p in student.parameters())
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    return total, trainable, sum(p.numel() for p in teacher.parameters())


def tokens_per_crop(size: int, patch: int, n_registers: int) -> int:
    return (size // patch) ** 2 + 1 + n_registers


def masked_patches(cfg) -> float:
    """Expected masked global patches per micro-batch (iBOT): crops masked with ``mask_probability``, each
    with the mean of ``mask_ratio`` of its patches."""
    c, loss = cfg.data.crops, cfg.loss
    patches = (c.global_size // cfg.model.patch_size) ** 2
    lo, hi = loss.mask_ratio
    return cfg.data.batch_size * c.n_global * loss.mask_probability * (lo + hi) / 2 * patches


def estimate_memory(cfg, world_size: int = 1) -> MemoryEstimate:
    """Per-device memory of the student/teacher step at ``cfg``'s model, crops, batch and precision."""
    from pathfm.ssl.models import ARCH_SPECS

    total, trainable, teacher = parameter_counts(cfg)
    spec = ARCH_SPECS[cfg.model.arch]
    c, m, b = cfg.data.crops, cfg.model, cfg.data.batch_size
    tokens = b * (c.n_global * tokens_per_crop(c.global_size, m.patch_size, m.n_registers)
                  + c.n_local * tokens_per_crop(c.local_size, m.patch_size, m.n_registers))
    per_token = 68 if cfg.run.precision == "fp32" else 34
    activations = spec.depth * tokens * spec.embed_dim * per_token
    masked = masked_patches(cfg)
    k_dino = cfg.dino_head.n_prototypes
    patch_head = cfg.ibot_head if cfg.loss.separate_ibot_head else cfg.dino_head

    def student_rows(rows: float, head) -> float:
        return rows * (4 * head.hidden_dim + 2 * head.bottleneck_dim + 8 * head.n_prototypes)

    cls_rows = b * (c.n_global + c.n_local)
    heads = (student_rows(cls_rows, cfg.dino_head) + student_rows(masked, patch_head)
             + b * c.n_global * 8 * k_dino + masked * 8 * patch_head.n_prototypes)
    buckets = 4 * trainable if world_size > 1 else 0
    return MemoryEstimate(weights=4 * total, gradients=4 * trainable + buckets, optimizer=8 * trainable,
                          teacher=4 * teacher, activations=int(activations), heads=int(heads))


__all__ = ["MemoryEstimate", "estimate_memory", "parameter_counts", "masked_patches", "tokens_per_crop", "GIB"]
