"""What a training checkpoint holds (:class:`TrainState`) and the RNG state it carries; the checkpoint file
itself (names, atomic checksummed writes, validity, the newest valid one) is :mod:`pathfm.backbone.checkpoint`'s."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    """Everything a training checkpoint saves and a resumed run restores (all weights_only-loadable)."""

    config: dict[str, Any]  # the resolved config (Config.model_dump(mode="json"))
    model: dict[str, Any]  # cfg.model, compared on resume
    backbone_model: dict[str, Any]  # the backbone's own description (export, pos-embed settings)
    config_sha: str
    stage: str  # the stage name the run is in
    progress: dict[str, Any]  # pathfm.ssl.stages.Progress.as_dict()
    student: dict[str, dict]  # net_state(student): backbone / dino_head (/ ibot_head) state dicts
    teacher: dict[str, dict]  # net_state(teacher)
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # GradScaler state ({} without fp16)
    centers: dict[str, dict]  # softmax-centering state per head ({} with Sinkhorn-Knopp)
    rng: list[dict]  # rng_state() of every rank, by rank
    world_size: int
    guards: dict[str, Any] | None = None  # pathfm.ssl.guards.GuardState.as_dict() (None: guards off / older file)

    def to_payload(self) -> dict[str, Any]:
        """The dict :func:`save_checkpoint` writes (no copies of the tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "TrainState":
        """From a loaded checkpoint dict; keys of later versions are ignored, missing optional ones default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


# ---------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states, as tensors/plain types (weights_only safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(distributed: bool, world_size: int) -> list[dict]:
    """:func:`rng_state` of every rank, by rank (a collective when ``distributed``)."""
    state = rng_state()
    if not distributed:
        return [state]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, state)
    return out


def check_resumable(state: TrainState, cfg: Any, stage_names: list[str], source: Path, *, sharded_run: bool,
                    world_size: int) -> None:
    """ConfigError naming ``source`` when its training state cannot continue in this run: another model (the
    execution-only model fields aside), a stage this run does not have, or a single-file checkpoint into a
    sharded (FSDP) run."""
    from pathfm.config import EXECUTION_ONLY_MODEL_FIELDS
    from pathfm.errors import ConfigError

    runs_as = set(EXECUTION_ONLY_MODEL_FIELDS)
    if {k: v for k, v in state.model.items() if k not in runs_as} != cfg.model.model_dump(mode="json", exclude=runs_as):
        raise ConfigError(f"{source}: the checkpoint's model {state.model} differs from the config's "
                          f"{cfg.model.model_dump(mode='json')}; resume with the run's own config.yaml")
    if state.stage not in stage_names:
        raise ConfigError(f"{source}: checkpoint is in stage '{state.stage}', not one of this run's {stage_names}")
    if sharded_run and not source.is_dir():
        raise ConfigError(f"{source}: a single-file (strategy ddp) checkpoint cannot be loaded into this "
                          f"FSDP-sharded run of {world_size} processes; resume it with run.strategy=ddp")
