"""Training in several local processes over gloo (CPU), for the tests that compare them with one process.

The processes are spawned, not forked (a fork of the pytest process after torch/Ray threads started can
hang); each one joins the group through torchrun's environment variables, as ``pathfm train`` does.
"""

from __future__ import annotations

import os

import torch.multiprocessing as mp
from ports import free_port


def train_worker(rank: int, world: int, port: int, run_dir: str, preset: str, overrides: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    from pathfm.config import load_config
    from pathfm.ssl.distributed import shutdown_distributed
    from pathfm.ssl.trainer import train

    try:
        train(load_config(preset, overrides), run_dir)
    finally:
        shutdown_distributed()


def train_on_gloo(world: int, run_dir, overrides: list[str], preset: str = "smoke") -> None:
    """``pathfm train`` of ``preset`` + ``overrides`` in ``world`` spawned processes; returns when all end."""
    mp.spawn(train_worker, args=(world, free_port(), str(run_dir), preset, overrides), nprocs=world)


def run_ranks(target, args_of_rank, world: int = 2, timeout_s: float = 60) -> list[int | None]:
    """Spawn ``target(*args_of_rank(rank))`` for every rank, wait up to ``timeout_s`` each (a rank still
    running is killed) and return the exit codes."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args_of_rank(r)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout_s)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]
