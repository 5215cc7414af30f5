"""Checkpoints of sharded (``run.strategy=fsdp``) runs with ``torch.distributed.checkpoint`` (DCP).

    run_dir/checkpoints/step_00000010.dcp/            .metadata, __<rank>_0.distcp (every rank's shards)
                                                      train_state.pt (checkpoint.SHARDED_META: the TrainState
                                                      fields that are not student/teacher/optimizer)
    run_dir/checkpoints/step_00000010.dcp.sha256      pathfm.io.checksum over every file of the directory

Writing (:func:`save_sharded`, every rank): the shards go to ``.step_00000010.dcp.partial/``; when DCP
has finished on every rank (its metadata is written last, by rank 0, after all ranks wrote), rank 0 adds
the train state, renames the directory into place and writes the sidecar. A crash before that leaves a
``.partial`` directory or a directory without sidecar, neither of which counts (checkpoint.verify), so
"a checkpoint counts only when complete" holds as for single-file checkpoints.

Reading (:func:`load_sharded`): DCP reshards on load, so a checkpoint written by N processes resumes in
M processes, sharded or not (the plain modules of a one-process run receive whole tensors). The teacher
backbone of a sharded checkpoint reads back as a plain state dict in one process
(:func:`read_full_teacher`, for checkpoint averaging).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pathfm.backbone import checkpoint as ckpt
from pathfm.io import write_checksum

PARTIAL_SUFFIX = ".partial"


def _state_dicts(student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"student": get_model_state_dict(student), "teacher": get_model_state_dict(teacher),
            "optimizer": get_optimizer_state_dict(student, optimizer)}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns that it 'assumes the intent' when no process group exists; in one process that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _barrier() -> None:
    import torch.distributed as dist

    if _distributed():
        dist.barrier()


def save_sharded(run_dir: str | Path, step: int, meta: dict[str, Any], student: nn.Module, teacher: nn.Module,
                 optimizer: torch.optim.Optimizer, keep: int, is_main: bool) -> Path:
    """Collective: every rank writes its shards; rank 0 (``is_main``) completes, renames, checksums, prunes.
    ``meta``: the training state's payload without the networks' tensors (its student/teacher/optimizer are replaced)."""
    import torch.distributed.checkpoint as dcp

    final = ckpt.sharded_checkpoint_path(run_dir, step)
    partial = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
    if is_main:
        shutil.rmtree(partial, ignore_errors=True)  # a write of a killed attempt
        partial.parent.mkdir(parents=True, exist_ok=True)
    _barrier()
    with _one_process_quietly():
        dcp.save(_state_dicts(student, teacher, optimizer), checkpoint_id=partial, no_dist=not _distributed())
    if is_main:
        payload = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "step": int(step),
                   **meta, "student": {}, "teacher": {}, "optimizer": {}}
        torch.save(payload, partial / ckpt.SHARDED_META)
        ckpt.remove_checkpoint(final)  # a stale one of the same step (a resumed run passing it again)
        partial.rename(final)
        write_checksum(final)
        ckpt.prune(run_dir, keep)
    _barrier()
    return final


def load_sharded(path: str | Path, student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Collective: load a sharded checkpoint's networks and optimizer into this run's (sharded or plain)
    modules, whatever the number of processes that wrote it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _state_dicts(student, teacher, optimizer)
    with _one_process_quietly():
        dcp.load(state, checkpoint_id=Path(path), no_dist=not _distributed())
    set_model_state_dict(student, state["student"])
    set_model_state_dict(teacher, state["teacher"])
    set_optimizer_state_dict(student, optimizer, state["optimizer"])


def read_full_teacher(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """In one process: the teacher's parts (``{"backbone": {...}, "dino_head": {...}}``, plain CPU
    tensors) from a sharded checkpoint directory, as checkpoint.net_state gives them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    meta = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    wanted = {k[len("teacher."):]: torch.empty(m.size, dtype=m.properties.dtype)
              for k, m in meta.items() if k.startswith("teacher.") and isinstance(m, TensorStorageMetadata)}
    with _one_process_quietly():
        dcp.load({"teacher": wanted}, checkpoint_id=path, no_dist=True)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in wanted.items():
        part, name = key.split(".", 1)
        out.setdefault(part, {})[name] = tensor
    return out
