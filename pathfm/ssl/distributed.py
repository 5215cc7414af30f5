"""Process-group setup for ``torchrun`` (DDP) and the collective hooks the losses need.

One process (no torch.distributed at all) is the default; under ``torchrun`` the usual env variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) start NCCL on GPUs or gloo on CPUs.
Sinkhorn-Knopp and softmax centering receive :func:`all_reduce_sum` (or None in one process), so their
normalisers are global sums exactly as in DINOv2 (§A.3 of the reference notes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist

AllReduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None in a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# the oldest NVIDIA driver (Linux) a CUDA runtime of each major version runs on with minor-version
# compatibility (NVIDIA's CUDA compatibility guide): torch 2.14.1+cu130 needs >= 580
MIN_DRIVER = {"13": 580, "12": 525, "11": 450}


@dataclass(frozen=True)
class SmiGpus:
    """What ``nvidia-smi`` reports: one (name, driver version) per GPU."""

    gpus: tuple[tuple[str, str], ...]

    @property
    def driver(self) -> str:
        return self.gpus[0][1] if self.gpus else "?"


def nvidia_smi_gpus(timeout_s: float = 15.0) -> SmiGpus | None:
    """The GPUs ``nvidia-smi`` (on PATH) lists, with the driver version; None when there is no nvidia-smi or
    it fails (no driver loaded, no GPU) or lists nothing."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [tuple(x.strip() for x in line.rsplit(",", 1)) for line in out.stdout.splitlines() if "," in line]
    return SmiGpus(tuple((r[0], r[1]) for r in rows)) if out.returncode == 0 and rows else None


def unusable_gpu_message(smi: SmiGpus | None, cuda_available: bool, visible_devices: str | None = None,
                         torch_version: str = torch.__version__, torch_cuda: str | None = torch.version.cuda) -> str | None:
    """Why the GPUs nvidia-smi lists cannot be used by this torch (None: nothing is wrong, i.e. torch sees a
    GPU, nvidia-smi lists none, or ``CUDA_VISIBLE_DEVICES`` = ``visible_devices`` hides them on purpose).
    Pure: the caller passes :func:`nvidia_smi_gpus` and ``torch.cuda.is_available()``."""
    if cuda_available or smi is None or not smi.gpus:
        return None
    if visible_devices is not None and visible_devices.strip() in ("", "-1", "none", "NoDevFiles"):
        return None  # hidden on purpose
    names = ", ".join(sorted({n for n, _ in smi.gpus}))
    seen = f"nvidia-smi lists {len(smi.gpus)} GPU(s) ({names}; NVIDIA driver {smi.driver})"
    if torch_cuda is None:
        return (f"{seen} but torch {torch_version} is a CPU-only build; install the CUDA build "
                "(scripts/bootstrap.sh, or the torch wheel for your CUDA from download.pytorch.org), "
                "or set run.device=cpu to train on the CPU on purpose")
    cuda = ".".join(torch_cuda.split(".")[:2])
    need = MIN_DRIVER.get(cuda.split(".")[0])
    major = smi.driver.split(".")[0]
    if need is not None and major.isdigit() and int(major) < int(need):
        return (f"{seen} but torch {torch_version} (CUDA {cuda}) needs NVIDIA driver >= {need}: torch cannot use "
                f"the GPU and would train on the CPU. Update the driver to {need} or newer, or install a torch "
                f"build for an older CUDA that driver {smi.driver} supports; run.device=cpu trains on the CPU "
                "on purpose")
    return (f"{seen} but torch {torch_version} (CUDA {cuda}"
            + (f", needs driver >= {need}" if need else "") + ") cannot use it (torch.cuda.is_available() is "
            "False): check the driver (nvidia-smi, dmesg), that the process may open /dev/nvidia*, and "
            "CUDA_VISIBLE_DEVICES; run.device=cpu trains on the CPU on purpose")


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU, except that a GPU nvidia-smi lists but torch
    cannot use (an NVIDIA driver too old for this torch's CUDA, a CPU-only torch) is a ConfigError naming the
    driver and the fix, not a silent CPU run."""
    from pathfm.errors import ConfigError

    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = unusable_gpu_message(nvidia_smi_gpus(), False, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if why is not None:
            raise ConfigError(f"run.device={requested}: {why}")
        if requested == "auto":
            return torch.device("cpu")
        raise ConfigError("run.device=cuda but no CUDA device is visible; use run.device=auto or cpu")
    return torch.device("cuda", local_rank)


def init_distributed(requested_device: str = "auto", timeout_s: int | None = None) -> DistEnv:
    """Join the process group described by torchrun's env variables (or stay single-process). ``timeout_s``
    (``run.collective_timeout_s``): how long a collective waits for a missing peer before it raises (gloo)
    or the NCCL watchdog aborts the process; None: torch's default."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(requested_device, local_rank)
    if world <= 1:
        return DistEnv(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s is not None else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistEnv(rank, world, local_rank, device, backend)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, op: "dist.ReduceOp | None" = None) -> torch.Tensor:
    """In-place reduction (sum unless ``op`` says otherwise) over all ranks, returning ``t``; a no-op in
    one process. This is the ``all_reduce`` hook the centering functions call as ``f(t, op=...)``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
    return t


def all_reduce_hook(env: DistEnv) -> AllReduce | None:
    """The hook handed to Sinkhorn-Knopp / centering: None in one process."""
    return all_reduce_sum if env.distributed else None


def all_reduce_sum_dict(values: dict[str, float], env: DistEnv, device: torch.device) -> dict[str, float]:
    """Sum a dict of counters over ranks (one float64 all_reduce)."""
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    all_reduce_sum(t)
    return dict(zip(keys, t.tolist()))


def all_reduce_mean_dict(values: dict[str, float], env: DistEnv, device: torch.device) -> dict[str, float]:
    """Average a dict of scalars over ranks (for logging)."""
    if not env.distributed or not values:
        return values
    return {k: v / env.world_size for k, v in all_reduce_sum_dict(values, env, device).items()}


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
