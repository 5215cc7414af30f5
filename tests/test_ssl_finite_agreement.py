"""A NaN loss on one DDP rank stops every rank at the same step (real 2-process gloo group), with a message
naming the rank, instead of the finite rank waiting in the gradient all-reduce until the collective timeout."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from gloo_helpers import run_ranks
from ports import free_port

from pathfm.errors import NonFiniteLossError
from pathfm.ssl.distributed import DistEnv
from pathfm.ssl.finite_agreement import check_finite_on_all_ranks, non_finite_ranks

COLLECTIVE_TIMEOUT_S = 20


def _rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    from pathfm.ssl.distributed import init_distributed, shutdown_distributed

    env = init_distributed("cpu", COLLECTIVE_TIMEOUT_S)
    result = {"steps_done": [], "error": None}
    t0 = time.time()
    try:
        for step in (1, 2, 3):
            parts = {"dino_global": 1.0, "dino_local": float("nan") if (rank == 1 and step == 2) else 2.0}
            check_finite_on_all_ranks(parts, step, env, env.device)
            result["steps_done"].append(step)
    except NonFiniteLossError as e:
        result["error"] = str(e)
    result["seconds"] = time.time() - t0
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    shutdown_distributed()


@pytest.mark.timeout(120)
def test_nan_on_rank_1_stops_both_ranks_at_that_step_naming_rank_1(tmp_path: Path):
    port = free_port()
    assert run_ranks(_rank, lambda r: (r, port, str(tmp_path)), timeout_s=60) == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps_done"] == r1["steps_done"] == [1]  # both stopped at step 2, neither went on to step 3
    assert "rank 1 of 2" in r1["error"] and "loss/dino_local is nan at step 2" in r1["error"]
    assert "rank 1 of 2" in r0["error"] and "this rank, 0, was finite" in r0["error"]
    assert r0["seconds"] < COLLECTIVE_TIMEOUT_S / 2  # stopped by agreement, not by the collective timeout


def test_one_process_keeps_the_single_rank_message():
    env = DistEnv(0, 1, 0, torch.device("cpu"), None)
    assert non_finite_ranks({"a": 1.0, "b": math.inf}, env, env.device) == [0]
    check_finite_on_all_ranks({"a": 1.0}, 1, env, env.device)
    with pytest.raises(NonFiniteLossError, match=r"^loss/b is inf at step 4;"):
        check_finite_on_all_ranks({"a": 1.0, "b": math.inf}, 4, env, env.device)


def _train_rank(rank: int, port: int, run_dir: str, out_dir: str) -> None:
    """One rank of a real 2-process DDP training run; rank 1's DINO head outputs NaN from its 3rd call on."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    from pathfm.config import load_config
    from pathfm.ssl.distributed import shutdown_distributed
    from pathfm.ssl.trainer import train

    calls = [0]

    def nan_from_third_call(module, inputs, output):
        if type(module).__name__ != "DINOHead" or not torch.is_grad_enabled():
            return None
        calls[0] += 1
        return output * float("nan") if calls[0] >= 3 else None

    if rank == 1:
        torch.nn.modules.module.register_module_forward_hook(nan_from_third_call)
    cfg = load_config("cpu", ["data.batch_size=2", "data.crops.n_local=2", "run.progress=false", "optim.steps=6",
                              "optim.warmup_steps=1", "run.checkpoint_every=100", "run.threads=1", "run.guards={}",
                              f"run.collective_timeout_s={COLLECTIVE_TIMEOUT_S * 3}"])
    t0 = time.time()
    try:
        result = train(cfg, run_dir)
        out = {"final_step": result.final_step, "stop_reason": result.stop_reason}
    finally:
        shutdown_distributed()
    out["seconds"] = time.time() - t0
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_training_with_nan_on_one_rank_stops_both_as_diverged_naming_the_rank(tmp_path: Path):
    from pathfm.ssl.guards import read_guard_trip

    port, run_dir = free_port(), tmp_path / "run"
    assert run_ranks(_train_rank, lambda r: (r, port, str(run_dir), str(tmp_path)), timeout_s=300) == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["final_step"] == r1["final_step"] == 2 and r0["stop_reason"] == r1["stop_reason"] == "diverged"
    trip = read_guard_trip(run_dir)  # written by rank 0, whose own loss was finite
    assert trip["reason"] == "diverged" and trip["step"] == 3 and "rank 1 of 2" in trip["message"], trip
