"""All ranks of a DDP run agree on a non-finite loss before any of them calls ``backward``.

Each rank checks its own loss parts; without agreement the rank that saw NaN/inf raises while the others
enter DDP's gradient all-reduce and wait for it until ``run.collective_timeout_s`` ends the run with a
timeout that names no cause. One ``all_reduce`` of a per-rank flag vector (length = world size) tells every
rank which ranks saw a non-finite loss, so all of them raise :class:`~pathfm.errors.NonFiniteLossError` at
the same step, with a message naming those ranks (and, on a bad rank, the loss part). In one process this
is :func:`pathfm.ssl.step.check_finite` unchanged.
"""

from __future__ import annotations

import math

import torch

from pathfm.errors import NonFiniteLossError
from pathfm.ssl.distributed import DistEnv, all_reduce_sum
from pathfm.ssl.step import check_finite


def non_finite_ranks(parts: dict[str, float], env: DistEnv, device: torch.device) -> list[int]:
    """The ranks (sorted) whose loss parts hold a NaN or inf; a collective on every rank of a DDP run."""
    bad = any(not math.isfinite(v) for v in parts.values())
    if not env.distributed:
        return [env.rank] if bad else []
    flags = torch.zeros(env.world_size, device=device)
    flags[env.rank] = float(bad)
    all_reduce_sum(flags)
    return [r for r, f in enumerate(flags.tolist()) if f > 0]


def check_finite_on_all_ranks(parts: dict[str, float], step: int, env: DistEnv, device: torch.device) -> None:
    """Raise ``NonFiniteLossError`` on every rank when any rank's loss is NaN/inf (see the module docstring)."""
    ranks = non_finite_ranks(parts, env, device)
    if not ranks:
        return
    if not env.distributed:
        check_finite(parts, step)
    where = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} of {env.world_size}"
    if env.rank in ranks:
        try:
            check_finite(parts, step)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"on {where}: {e}; all ranks stopped together") from None
    raise NonFiniteLossError(
        f"a non-finite loss on {where} at step {step} (this rank, {env.rank}, was finite); all ranks stopped "
        "together, nothing was saved for this step. Lower the lr or the regulariser weight, or resume from the last "
        "checkpoint")
