"""Sharded data parallelism (FSDP2) for large backbones: which strategy a run uses, how the student and the
teacher are sharded, and the pieces of a step that must know about shards.

``run.strategy``: ``ddp`` (every rank holds full weights; DDP averages gradients), ``fsdp`` (parameters,
gradients and AdamW state sharded over the ranks with ``torch.distributed.fsdp.fully_shard``, as DINOv2
trains ViT-g), or ``auto`` (= :func:`resolve_strategy`: fsdp for vit_large / vit_giant on CUDA, ddp
otherwise). In one process fsdp shards nothing (a world of one): the run is the plain one-process run,
but it writes the same sharded (DCP) checkpoints (:mod:`pathfm.backbone.sharded_checkpoint`), so a run can
move between process counts.

How a network is sharded (:func:`shard_net`): one FSDP unit per transformer block, one for the rest of
the backbone (patch embedding, tokens, final norm; ``forward_features_list`` registered as an FSDP
forward method because the trainer calls it instead of ``forward``), one per head. Student and EMA
teacher are sharded alike, so their local shards line up and the EMA update works shard by shard
(pathfm.ssl.step.ema_update). Mixed precision (:func:`mixed_precision_policy`): bf16 parameters in
compute with fp32 master weights and fp32 gradient reductions on CUDA; fp32 on CPU. The residual stream
stays fp32 under the bf16 parameters, as under DDP + autocast (:func:`residual_unchanged_fraction` measures
why: docs/large-backbones.md).

Gradient clipping stays per submodule (backbone, DINO head, iBOT head, as DINOv2): the gradients are
DTensors and ``torch.nn.utils.clip_grad_norm_`` computes their global norm (the shard norms reduced over
ranks; checked against one process in tests/test_ssl_sharding.py); :func:`full_value` turns the DTensor
norm into a plain tensor for logging.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from pathfm.errors import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp")
SHARDED_BY_DEFAULT = ("vit_large", "vit_giant")  # archs ``auto`` shards on CUDA


def resolve_strategy(requested: str, arch: str, device_type: str) -> str:
    """``ddp`` or ``fsdp`` for ``run.strategy=requested`` on a ``device_type`` ("cuda" / "cpu") device."""
    if requested not in STRATEGIES:
        raise ConfigError(f"run.strategy={requested!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if requested != "auto":
        return requested
    return "fsdp" if arch in SHARDED_BY_DEFAULT and device_type == "cuda" else "ddp"


def check_strategy(strategy: str, precision: str, device_type: str, probe_every: int, world_size: int) -> None:
    """ConfigError, before any step, for what the fsdp path cannot run."""
    if strategy != "fsdp":
        return
    if precision == "fp16" and device_type == "cuda":
        raise ConfigError("run.strategy=fsdp with run.precision=fp16 needs a sharded gradient scaler, which pathfm "
                          "does not have; use run.precision=bf16 (fp32 master weights and reductions) or strategy=ddp")
    if probe_every > 0 and world_size > 1:
        raise ConfigError("probe.every > 0 (the in-training probe runs on rank 0 only) cannot run with "
                          "run.strategy=fsdp on several processes (the sharded teacher needs every rank); "
                          "set probe.every=0 or run.strategy=ddp")


def intended_device_type(cfg: Any) -> str:
    """The device type a dry-run checks ``cfg`` for: ``cpu`` with ``run.device=cpu``, else ``cuda`` (what
    ``auto`` and ``cuda`` resolve to on a GPU node; a dry-run often runs where there is no GPU)."""
    return "cpu" if cfg.run.device == "cpu" else "cuda"


def startup_checks(cfg: Any, world_size: int, device_type: str | None = None, *,
                   stage_cfgs: Sequence[Any] | None = None, where: str = "") -> str:
    """What a start refuses before it builds anything, for ``world_size`` processes on ``device_type``
    (default :func:`intended_device_type`): the strategy ``run.strategy`` resolves to and what that
    strategy cannot run (:func:`check_strategy`), for every stage's config (``stage_cfgs``; default: the
    stages of ``cfg``, pathfm.ssl.stages.plan_stages). The trainer runs these at start; ``pathfm train
    --dry-run`` (world size: $WORLD_SIZE), the sweep pre-flight and ``pathfm ablate run --dry-run`` (the
    scale's workers) run the same. Returns the strategy; ConfigError (prefixed with ``where``) otherwise."""
    from pathfm.ssl.runtime import effective_precision
    from pathfm.ssl.stages import plan_stages

    device_type = device_type or intended_device_type(cfg)
    stage_cfgs = [s.cfg for s in plan_stages(cfg)] if stage_cfgs is None else stage_cfgs
    precision = effective_precision(cfg, torch.device(device_type))
    try:
        strategy = resolve_strategy(cfg.run.strategy, cfg.model.arch, device_type)
        for c in stage_cfgs:
            check_strategy(strategy, precision, device_type, c.probe.every, world_size)
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}: {e}") from None
    return strategy


def mixed_precision_policy(device_type: str, precision: str) -> Any:
    """FSDP2's policy: bf16 compute parameters and fp32 reductions on CUDA with bf16, fp32 everywhere else."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device_type == "cuda" and precision == "bf16":
        # the units' inputs are not cast to bf16: the residual stream stays fp32 as under DDP + autocast
        # (shard_net sets the backbone's residual dtype; docs/large-backbones.md, "Residual stream")
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)


def shard_net(net: nn.Module, policy: Any) -> list[nn.Module]:
    """Shard an SSL network (pathfm.ssl.step.SSLNet) in place; returns its top-level FSDP units (backbone,
    heads), the modules gradient sync is switched on (:func:`set_gradient_sync`). Needs a process group."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # reshard after forward everywhere: the teacher never runs a backward that would reshard its units, and
    # the EMA update and checkpoints need the sharded parameters back
    kw = {"mp_policy": policy, "reshard_after_forward": True}
    backbone = net.backbone
    backbone.residual_dtype = torch.float32  # the master weights' dtype, whatever the compute parameters' dtype
    for block in backbone.blocks:
        fully_shard(block, **kw)
    fully_shard(backbone, **kw)
    register_fsdp_forward_method(backbone, "forward_features_list")  # forward_features and forward call it
    # its outputs are views (x[:, 0], x[:, 1+r:]) that the step only indexes and concatenates, never changes in
    # place, which is what FSDP's warning about returned views is about
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPVisionTransformer\) returned a view")
    units: list[nn.Module] = [backbone]
    for head in (net.dino_head, net.ibot_head):
        if head is not None:
            fully_shard(head, **kw)
            units.append(head)
    return units


def residual_unchanged_fraction(before: Tensor, after: Tensor) -> float:
    """The fraction of residual-stream elements a block leaves bit-identical (``after == before``): with
    LayerScale 1e-5 at init a bf16 residual (resolution 2^-8 relative) swallows nearly every block update."""
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {tuple(before.shape)} vs {tuple(after.shape)}")
    return float((after == before).float().mean()) if before.numel() else 1.0


def set_gradient_sync(units: Iterable[nn.Module], sync: bool) -> None:
    """Gradient accumulation: reduce-scatter gradients only on the last micro-batch (FSDP's ``no_sync``)."""
    for unit in units:
        unit.set_requires_gradient_sync(sync)


def local_tensor(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor; a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full_value(t: Tensor) -> Tensor:
    """The whole tensor (gathered over ranks, a collective) of a DTensor; a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """A full (unsharded) CPU state dict of ``module``: call on every rank; rank 0 receives it (other
    ranks get an empty dict when the module is sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
