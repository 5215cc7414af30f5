"""Per-device memory of one training step, estimated from the config before any GPU time is spent.

    weights      = P_student x 4                    fp32 master weights
    casts        = P_trainable x 2                  bf16/fp16 autocast: the cast copy of every student weight,
                                                    cached by autocast for the whole step (the backward runs
                                                    inside it); none at fp32 or under multi-process fsdp (the
                                                    parameters are gathered in bf16: ``gathered``)
    gradients    = P_trainable x 4                  (+ the same again for DDP's gradient buckets, world > 1)
    optimizer    = P_trainable x 8                  AdamW exp_avg and exp_avg_sq, fp32
    teacher      = P_teacher x 4                    the EMA teacher, fp32
    activations  = T x (L x b_block + 4 D + 3 p^2 a)   saved for the student's backward; T = tokens of every
                                                    crop of the micro-batch; b_block per token and block
                                                    (:func:`block_bytes_per_token`: by FFN, LayerScale and
                                                    precision), the final LayerNorm's fp32 input and the patch
                                                    embedding's cast pixels
    heads        = R_s x (a (D + 4 H) + 4 b + 8 K) + R_t x 8 K   student head activations and logits / log-
                                                    softmax (fp32) on R_s rows (CLS of every crop + masked
                                                    patches), the teacher's logits and targets on R_t rows (global
                                                    CLS + masked patches); at fp32 also the weight-normed
                                                    prototype matrix (K x b x 4) each student head computes
    runtime      = 1 GiB                            CUDA context, cuBLAS workspace, NCCL buffers (an allowance)

a = 2 bytes (bf16/fp16) or 4 (fp32). ``b_block`` follows what CPU bf16 autocast keeps, counted with
saved-tensor hooks (tests/test_ssl_memory_measured.py: within 15 % for ViT-S and ViT-B, MLP and SwiGLU): per
token and width unit 42 bytes for an MLP block (both LayerNorm inputs in fp32, the qkv input and output, the
attention output and the copy the projection reads, the LayerScale inputs, the FFN's hidden activations), 47
for SwiGLU, 76 / 87 at fp32. Attention scores are not stored (SDPA's flash / memory-efficient kernels).

Strategy and checkpointing (:func:`estimate_memory` arguments; :func:`training_memory` takes them from the
config as the trainer resolves them):

    fsdp         weights, gradients, optimizer and teacher / world size (no DDP buckets), plus
    gathered     = 2 x U x b_p + U x 4              the largest FSDP unit (a block or a head, U parameters)
                                                    all-gathered for compute (b_p = 2 bytes bf16, 4 fp32) with the
                                                    next one prefetched, and its unsharded fp32 gradient
                 + P_trainable x 4                  (in ``gradients``) with optim.grad_accum > 1: FSDP keeps the
                                                    unsharded fp32 gradients between micro-batches
    checkpointing activations = T x (L x D x r + b_block + 4 D + 3 p^2 a)   each block keeps only its input
                                                    (r = 4: the residual stream is fp32, also under fsdp's bf16
                                                    parameters); one block is recomputed at a time

:func:`check_fits` refuses a trial whose estimate exceeds the GPU it will get (``run.gpu_memory_gib`` or
the visible CUDA device) less :data:`HEADROOM` (allocator fragmentation, cached blocks), and names the fixes
that would make it fit (:func:`fixes`).

P counts come from the model built on the meta device (no memory, exact), the rest from the crop sizes,
batch and mask settings. Before the measured terms the estimate was 20-55 % low (docs/large-backbones.md has
the before/after table). Not yet checked against a GPU's measured peak (``benchmarks/gpu_check.py`` prints
both when run on one).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
RUNTIME_BYTES = GIB  # CUDA context + cuBLAS workspace + NCCL buffers per GPU (an allowance, not measured)
HEADROOM = 0.10  # share of the GPU left for allocator fragmentation and cached blocks (check_fits)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by term."""

    weights: int
    gradients: int
    optimizer: int
    teacher: int
    activations: int
    heads: int
    gathered: int = 0  # fsdp: the unsharded working set of the largest unit
    casts: int = 0  # autocast's cached low-precision copies of the student weights
    runtime: int = 0  # CUDA context and library buffers

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.teacher + self.activations + self.heads
                + self.gathered + self.casts + self.runtime)

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "casts": self.casts, "gradients": self.gradients,
                "optimizer": self.optimizer, "teacher": self.teacher, "activations": self.activations,
                "heads": self.heads, "gathered": self.gathered, "runtime": self.runtime, "total": self.total}

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.as_dict().items()
                          if k != "total" and (v or k != "gathered"))
        return f"~{self.total / GIB:.1f} GiB per device ({parts} GiB)"


_COUNTS: dict[str, tuple[int, int, int, int]] = {}  # model key -> counts (building ViT-g on meta takes seconds)


def _model_counts(cfg) -> tuple[int, int, int, int]:
    """(student, trainable student, teacher, largest FSDP unit) parameters of the model ``cfg`` builds,
    counted on the meta device once per model/heads setting."""
    import json

    import torch

    from pathfm.config import EXECUTION_ONLY_MODEL_FIELDS
    from pathfm.ssl.step import build_student_teacher

    key = json.dumps([cfg.model.model_dump(mode="json", exclude=set(EXECUTION_ONLY_MODEL_FIELDS)),
                      cfg.dino_head.model_dump(mode="json"), cfg.ibot_head.model_dump(mode="json"),
                      cfg.loss.separate_ibot_head], sort_keys=True)
    if key not in _COUNTS:
        with torch.device("meta"):
            student, teacher = build_student_teacher(cfg)
        numel = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        blocks = [numel(b) for b in student.backbone.blocks]
        rest = numel(student.backbone) - sum(blocks)
        heads = [numel(h) for h in (student.dino_head, student.ibot_head) if h is not None]
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        _COUNTS[key] = (numel(student), trainable, numel(teacher), max(blocks + [rest] + heads))
    return _COUNTS[key]


def parameter_counts(cfg) -> tuple[int, int, int]:
    """(student parameters, trainable student parameters, teacher parameters) of the model ``cfg`` builds,
    counted on the meta device."""
    return _model_counts(cfg)[:3]


def largest_shard_unit(cfg) -> int:
    """Parameters of the largest FSDP unit of the student (pathfm.ssl.sharding.shard_net: one block, the
    rest of the backbone, or a head)."""
    return _model_counts(cfg)[3]


def tokens_per_crop(size: int, patch: int, n_registers: int) -> int:
    return (size // patch) ** 2 + 1 + n_registers


def masked_patches(cfg) -> float:
    """Expected masked global patches per micro-batch (iBOT): crops masked with ``mask_probability``, each
    with the mean of ``mask_ratio`` of its patches."""
    c, loss = cfg.data.crops, cfg.loss
    patches = (c.global_size // cfg.model.patch_size) ** 2
    lo, hi = loss.mask_ratio
    return cfg.data.batch_size * c.n_global * loss.mask_probability * (lo + hi) / 2 * patches


def ffn_hidden(ffn: str, dim: int) -> int:
    """The FFN's hidden width (pathfm.backbone.vit: MLP 4 D; SwiGLU round_up_8(floor(4 D x 2/3)))."""
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8 if ffn == "swiglu" else 4 * dim


def block_bytes_per_token(dim: int, heads: int, ffn: str, layerscale: bool, act_bytes: int) -> int:
    """Bytes one transformer block keeps for the backward pass per token (``act_bytes``: 2 under bf16/fp16
    autocast, 4 at fp32): both LayerNorm inputs in fp32 (autocast runs LayerNorm in fp32), the qkv input and
    output, the attention output and the copy the projection reads, the LayerScale inputs, and the FFN (MLP:
    its input and the hidden activation before and after GELU; SwiGLU: its input, both gates, SiLU's output
    and the product), plus the LayerNorm statistics and the attention's log-sum-exp."""
    hidden = ffn_hidden(ffn, dim)
    ffn_elems = dim + (4 * hidden if ffn == "swiglu" else 2 * hidden)
    per_dim = 2 * 4 * dim + act_bytes * (6 * dim + (2 * dim if layerscale else 0) + ffn_elems)
    return per_dim + 2 * 2 * 4 + 4 * heads


def estimate_memory(cfg, world_size: int = 1, strategy: str = "ddp",
                    activation_checkpointing: bool | None = None) -> MemoryEstimate:
    """Per-device memory of the student/teacher step at ``cfg``'s model, crops, batch and precision, for
    ``strategy`` (``ddp`` | ``fsdp``) over ``world_size`` processes; ``activation_checkpointing`` None:
    ``cfg.model.activation_checkpointing``."""
    from pathfm.backbone.vit import ARCH_SPECS

    if activation_checkpointing is None:
        activation_checkpointing = cfg.model.activation_checkpointing
    total, trainable, teacher = parameter_counts(cfg)
    spec = ARCH_SPECS[cfg.model.arch]
    c, m, b = cfg.data.crops, cfg.model, cfg.data.batch_size
    d = spec.embed_dim
    tokens = b * (c.n_global * tokens_per_crop(c.global_size, m.patch_size, m.n_registers)
                  + c.n_local * tokens_per_crop(c.local_size, m.patch_size, m.n_registers))
    low = cfg.run.precision != "fp32"
    act = 2 if low else 4
    sharded = strategy == "fsdp" and world_size > 1  # one process shards nothing: the plain run
    param_bytes = 2 if low and sharded else 4  # a gathered FSDP unit: bf16 policy, else fp32
    residual = 4  # the residual stream is fp32, also under fsdp's bf16 parameters (pathfm.ssl.sharding.shard_net)
    block = block_bytes_per_token(d, spec.num_heads, m.ffn, bool(m.layerscale), act)
    outside = 4 * d + 3 * m.patch_size**2 * act  # the final LayerNorm's fp32 input, the patch embedding's input
    if activation_checkpointing:
        activations = tokens * (spec.depth * d * residual + block + outside)
    else:
        activations = tokens * (spec.depth * block + outside)
    masked = masked_patches(cfg)
    k_dino = cfg.dino_head.n_prototypes
    patch_head = cfg.ibot_head if cfg.loss.separate_ibot_head else cfg.dino_head

    def student_rows(rows: float, head) -> float:
        return rows * (act * (d + 4 * head.hidden_dim) + 4 * head.bottleneck_dim + 8 * head.n_prototypes)

    cls_rows = b * (c.n_global + c.n_local)
    heads = (student_rows(cls_rows, cfg.dino_head) + student_rows(masked, patch_head)
             + b * c.n_global * 8 * k_dino + masked * 8 * patch_head.n_prototypes)
    if not low:  # each student head's weight-normed prototype matrix (under autocast: its copy is in ``casts``)
        heads += sum(4 * h.n_prototypes * h.bottleneck_dim for h in {id(h): h for h in (cfg.dino_head, patch_head)}.values())
    casts = 2 * trainable if low and not sharded else 0
    common = {"activations": int(activations), "heads": int(heads), "casts": casts, "runtime": RUNTIME_BYTES}
    if strategy == "fsdp":
        shard = lambda n: -(-n // world_size)  # noqa: E731  (ceil: every rank holds an equal padded shard)
        unit = largest_shard_unit(cfg) if sharded else 0
        accumulated = 4 * trainable if sharded and cfg.optim.grad_accum > 1 else 0  # unsharded, between micro-batches
        return MemoryEstimate(weights=shard(4 * total), gradients=shard(4 * trainable) + accumulated,
                              optimizer=shard(8 * trainable), teacher=shard(4 * teacher),
                              gathered=2 * unit * param_bytes + 4 * unit, **common)
    buckets = 4 * trainable if world_size > 1 else 0
    return MemoryEstimate(weights=4 * total, gradients=4 * trainable + buckets, optimizer=8 * trainable,
                          teacher=4 * teacher, **common)


def training_memory(cfg, world_size: int = 1) -> tuple[MemoryEstimate, str]:
    """The estimate for the strategy the trainer will use on a GPU (``run.strategy``, auto resolved for
    CUDA) and the config's activation checkpointing; returns (estimate, strategy)."""
    from pathfm.ssl.sharding import resolve_strategy

    strategy = resolve_strategy(cfg.run.strategy, cfg.model.arch, "cuda")
    return estimate_memory(cfg, world_size, strategy), strategy


def gpu_capacity(cfg) -> tuple[int, str] | None:
    """(bytes, where the figure comes from) of the GPU a run gets: ``run.gpu_memory_gib``, else the
    visible CUDA device; None when neither is known (no check)."""
    if cfg.run.gpu_memory_gib is not None:
        return int(cfg.run.gpu_memory_gib * GIB), "run.gpu_memory_gib"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"{props.name}"
    return None


def largest_fitting_batch(est: MemoryEstimate, batch_size: int, capacity: int) -> int:
    """The largest per-GPU batch whose estimate fits ``capacity`` (activations and head terms scale
    linearly with the batch, the rest does not); 0 if even the weights do not fit."""
    per_image = (est.activations + est.heads) / batch_size
    room = capacity - (est.total - est.activations - est.heads)
    return max(0, min(batch_size, int(room // per_image))) if per_image > 0 else batch_size


def fixes(cfg, world_size: int, capacity: int, batch_key: str = "data.batch_size") -> list[str]:
    """What would make ``cfg`` fit ``capacity`` bytes per GPU (after the headroom: :func:`usable_bytes`), with
    the estimate each fix gives. ``batch_key``:
    the key that sets this stage's batch (``highres.batch_size`` for the high-resolution stage)."""
    est, strategy = training_memory(cfg, world_size)
    out = []
    if strategy != "fsdp" and world_size > 1:
        alt = estimate_memory(cfg, world_size, "fsdp")
        out.append(f"run.strategy=fsdp (~{alt.total / GIB:.1f} GiB)")
    if not cfg.model.activation_checkpointing:
        alt = estimate_memory(cfg, world_size, strategy, activation_checkpointing=True)
        out.append(f"model.activation_checkpointing=true (~{alt.total / GIB:.1f} GiB)")
    batch = largest_fitting_batch(est, cfg.data.batch_size, capacity)
    if 0 < batch < cfg.data.batch_size:
        out.append(f"{batch_key}={batch} (with optim.grad_accum to keep the global batch)")
    if world_size == 1 and strategy != "fsdp":
        out.append("more GPUs per trial with run.strategy=fsdp (shards weights, gradients, optimizer and teacher)")
    return out


def check_fits(cfg, world_size: int, where: str = "", batch_key: str = "data.batch_size") -> MemoryEstimate:
    """The per-GPU estimate; ConfigError when it exceeds the GPU the run gets (:func:`gpu_capacity`),
    naming the fixes."""
    from pathfm.errors import ConfigError

    est, strategy = training_memory(cfg, world_size)
    cap = gpu_capacity(cfg)
    if cap is not None and est.total > usable_bytes(cap[0]):
        capacity, source = cap
        options = "; ".join(fixes(cfg, world_size, usable_bytes(capacity), batch_key)) or "a GPU with more memory"
        raise ConfigError(
            f"{where + ': ' if where else ''}estimated {est.total / GIB:.1f} GiB per GPU (strategy {strategy}, "
            f"activation checkpointing {'on' if cfg.model.activation_checkpointing else 'off'}, {world_size} "
            f"process(es)) does not fit {capacity / GIB:.1f} GiB ({source}) less {HEADROOM:.0%} headroom for "
            f"allocator fragmentation ({usable_bytes(capacity) / GIB:.1f} GiB); fixes: {options}")
    return est


def usable_bytes(capacity: int) -> int:
    """What an estimate may use of a GPU of ``capacity`` bytes: all but :data:`HEADROOM`."""
    return int(capacity * (1 - HEADROOM))


def memory_line(cfg, world_size: int, where: str = "", batch_key: str = "data.batch_size") -> str:
    """One line for a ``--dry-run``: the per-GPU estimate for the strategy and checkpointing the run will
    use; ConfigError with the fixes (:func:`check_fits`) when it cannot fit the GPU the run gets."""
    est = check_fits(cfg, world_size, where, batch_key)
    _, strategy = training_memory(cfg, world_size)
    return (f"memory per GPU ({strategy}, {world_size} process(es), activation checkpointing "
            f"{'on' if cfg.model.activation_checkpointing else 'off'}): {est.describe()}")


__all__ = ["memory_line", "MemoryEstimate", "estimate_memory", "training_memory", "check_fits", "fixes", "gpu_capacity",
           "largest_fitting_batch", "largest_shard_unit", "parameter_counts", "masked_patches", "tokens_per_crop",
           "block_bytes_per_token", "ffn_hidden", "usable_bytes", "GIB", "HEADROOM", "RUNTIME_BYTES"]
