"""``run.collective_timeout_s``: in a real 2-process gloo group, a rank that stops answering makes the other's
collective fail within the timeout instead of hanging (torch's default wait is 30 minutes)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from ports import free_port

from pathfm.config import load_config

TIMEOUT_S = 3


def _rank(rank: int, port: int, out: str) -> None:
    """Join the group with the timeout; rank 1 then hangs (sleeps), rank 0 all-reduces and records what happened."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    import torch

    from pathfm.ssl.distributed import all_reduce_sum, init_distributed

    env = init_distributed("cpu", TIMEOUT_S)
    assert env.backend == "gloo" and env.world_size == 2
    all_reduce_sum(torch.ones(1))  # both ranks answer once
    if rank == 1:
        time.sleep(600)
    t0 = time.time()
    try:
        all_reduce_sum(torch.ones(1))
        error = None
    except RuntimeError as e:
        error = str(e).splitlines()[0][:300]
    Path(out).write_text(json.dumps({"error": error, "waited": time.time() - t0}))


def test_the_default_is_minutes_not_hours():
    assert load_config("smoke").run.collective_timeout_s == 600


@pytest.mark.timeout(120)
def test_a_hung_rank_makes_the_other_fail_within_the_collective_timeout(tmp_path: Path):
    ctx = mp.get_context("fork")  # no re-import in the children; nothing in this process has started a group
    port, out = free_port(), tmp_path / "rank0.json"
    procs = [ctx.Process(target=_rank, args=(r, port, str(out))) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=120)
        assert procs[0].exitcode == 0, procs[0].exitcode
        result = json.loads(out.read_text())
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=30)
    assert result["error"] is not None and "timed out" in result["error"].lower(), result
    assert TIMEOUT_S - 0.5 <= result["waited"] <= TIMEOUT_S + 5, result
