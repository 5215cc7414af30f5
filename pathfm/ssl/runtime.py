"""Where a training step runs: precision and autocast for the device, per-rank seeding, peak memory, and the
softmax centers (DINOv2's centering when ``loss.centering: softmax``)."""

from __future__ import annotations

import contextlib
import random
import resource
from typing import Any

import numpy as np
import torch

from pathfm.config import Config


PROC_STATUS, PROC_CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU; on CPU the process's peak resident set size (MiB), since the
    last :func:`reset_peak_memory` where Linux allows a reset (``VmHWM``), else since the process started."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open(PROC_STATUS) as f:
            hwm = next((line for line in f if line.startswith("VmHWM:")), None)
        if hwm is not None:
            return int(hwm.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mb` afresh, so a process that trains more than once (a notebook, a test
    session, a script looping over configs) reports each run's own peak: CUDA's peak statistics, or Linux's
    peak RSS (``clear_refs`` 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open(PROC_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux >= 4.0, or not allowed: the peak stays the process's


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; nothing on CPU or at fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def effective_precision(cfg: Config, device: torch.device) -> str:
    """``run.precision`` on CUDA; fp32 elsewhere."""
    return cfg.run.precision if device.type == "cuda" else "fp32"


def seed_everything(seed: int, rank: int) -> None:
    """One seed for init (same on every rank); ``seed + rank`` afterwards for per-rank randomness."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def build_centers(cfg: Config, device: torch.device) -> dict[str, Any] | None:
    """The DINO and iBOT softmax centers (``loss.centering: softmax``), else None (Sinkhorn-Knopp)."""
    if cfg.loss.centering != "softmax":
        return None
    from pathfm.ssl.centering import Center

    dims = {"dino": cfg.dino_head.n_prototypes}
    dims["ibot"] = cfg.ibot_head.n_prototypes if cfg.loss.separate_ibot_head else cfg.dino_head.n_prototypes
    return {k: Center(d, momentum=cfg.loss.center_momentum).to(device) for k, d in dims.items()}
