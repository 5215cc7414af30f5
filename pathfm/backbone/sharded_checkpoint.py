"""Checkpoints of sharded (``run.strategy=fsdp``) runs with ``torch.distributed.checkpoint`` (DCP).

    run_dir/checkpoints/step_00000010.dcp/            .metadata, __<rank>_0.distcp (every rank's shards)
                                                      train_state.pt (checkpoint.SHARDED_META: the TrainState
                                                      fields that are not student/teacher/optimizer)
    run_dir/checkpoints/step_00000010.dcp.sha256      pathfm.io.checksum over every file of the directory
                                                      (the ranks hash their own files, :func:`save_sharded`)

Writing (:func:`save_sharded`, every rank): the shards go to ``.step_00000010.dcp.partial/``; when DCP
has finished on every rank (its metadata is written last, by rank 0, after all ranks wrote), rank 0 adds
the train state; every rank hashes the files it wrote (:func:`shard_owner`; rank 0 also the metadata and the
train state), the digests are gathered (one collective, after each rank's own share: no rank hashes the
whole checkpoint while the others wait in a collective), and rank 0 renames the directory into place and
writes the sidecar from them. The sidecar is the same ``pathfm.io.checksum`` one process computes. A crash before that leaves a
``.partial`` directory or a directory without sidecar, neither of which counts (checkpoint.verify), so
"a checkpoint counts only when complete" holds as for single-file checkpoints.

Reading (:func:`load_sharded`): DCP reshards on load, so a checkpoint written by N processes resumes in
M processes, sharded or not (the plain modules of a one-process run receive whole tensors). The teacher
backbone of a sharded checkpoint reads back as a plain state dict in one process
(:func:`read_full_teacher`, for checkpoint averaging). On resume the ranks verify the sidecar together
(:func:`shared_checksum`): each hashes its share of the files (:func:`share_of_files`, balanced by size),
the digests are gathered, and every rank compares the same sum, so all ranks take the same decision.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pathfm.backbone import checkpoint as ckpt
from pathfm.io import checksum, combine_checksums, folder_files, sha256_file, write_checksum

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


def shard_owner(name: str, world_size: int) -> int:
    """The rank that hashes file ``name`` (relative) of a DCP directory it helped write: DCP's file writer names
    rank r's data files ``__<r>_<i>.distcp``; every other file (``.metadata``, the train state) is rank 0's."""
    m = re.fullmatch(r"__(\d+)_\d+\.distcp", name)
    rank = int(m.group(1)) if m else 0
    return rank if rank < world_size else 0


def share_of_files(sizes: dict[str, int], world_size: int) -> dict[str, int]:
    """Which rank hashes each file (name -> rank) when all ranks verify a directory together: largest file
    first to the rank with the fewest bytes so far (ties: the lower rank), so no rank reads more than the
    mean plus the largest file. Pure and deterministic: every rank computes the same split."""
    load = [0] * world_size
    owner: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owner[name] = rank
        load[rank] += sizes[name]
    return owner


def _gathered_digests(folder: Path, mine: list[str]) -> dict[str, str]:
    """This rank hashes ``mine`` (names in ``folder``); every rank receives the digests of all ranks."""
    import torch.distributed as dist

    digests = {name: sha256_file(folder / name) for name in mine}
    if not _distributed():
        return digests
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, digests)
    return {k: v for part in everyone for k, v in part.items()}


def shared_checksum(path: Path) -> str:
    """``pathfm.io.checksum(path)`` computed by all ranks together (a collective when ``path`` is a folder and a
    process group exists): each rank hashes its :func:`share_of_files` and the digests are gathered. A single
    file (a ddp checkpoint) is hashed by each rank itself, in parallel, with no collective."""
    import torch.distributed as dist

    path = Path(path)
    if not path.is_dir() or not _distributed():
        return checksum(path)
    names = folder_files(path)
    owner = share_of_files({n: (path / n).stat().st_size for n in names}, dist.get_world_size())
    rank = dist.get_rank()
    return combine_checksums(_gathered_digests(path, [n for n in names if owner[n] == rank]))


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
    # each rank hashes what it wrote (DCP has finished on every rank: its metadata is written), then one gather
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    mine = [n for n in folder_files(partial) if shard_owner(n, world) == rank]
    digests = _gathered_digests(partial, mine)
    if is_main:
        names = folder_files(partial)
        digests.update({n: sha256_file(partial / n) for n in names if n not in digests})  # none, with DCP's names
        ckpt.remove_checkpoint(final)  # a stale one of the same step (a resumed run passing it again)
        partial.rename(final)
        write_checksum(final, combine_checksums({n: digests[n] for n in names}))
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
