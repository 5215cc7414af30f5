"""Training checkpoints: atomic, checksummed, last K kept, corrupt ones skipped.

``run_dir/checkpoints/step_00000010.pt`` + ``step_00000010.pt.sha256`` (:func:`pathfm.io.checksum_path`; the
names are :class:`pathfm.records.RunFolder`'s).
The file is written to a temporary name and renamed; the sidecar is written after it. A checkpoint counts
as valid when its sidecar exists and matches and it loads with ``torch.load(weights_only=True)``; :func:`latest_valid`
walks back from the newest one, so a file truncated by a crash or a full disk falls back to the
previous checkpoint with a warning.

A sharded run (``run.strategy=fsdp``, :mod:`pathfm.backbone.sharded_checkpoint`) writes a directory instead,
``step_00000010.dcp/`` (every rank's shard, torch.distributed.checkpoint, plus :data:`SHARDED_META`),
renamed into place only when complete, with a sidecar over all its files (:func:`pathfm.io.checksum`).

What a training checkpoint holds is :class:`pathfm.ssl.train_state.TrainState` (its fields are the file's top-level keys, plus ``format``,
``version`` and ``step`` that :func:`save_checkpoint` adds).
"""

from __future__ import annotations

import errno
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from pathfm.errors import PathfmError
from pathfm.io import atomic_checksummed, checksum_mismatch, checksum_path
from pathfm.records import RunFolder
from pathfm.records.run_folder import SHARDED_META_FILE as SHARDED_META

FORMAT = "pathfm-checkpoint"
VERSION = 1


class CheckpointError(PathfmError):
    """No usable checkpoint where one was asked for."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return RunFolder(run_dir).checkpoints_dir


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return RunFolder(run_dir).checkpoint(step)


def sharded_checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return RunFolder(run_dir).checkpoint(step, sharded=True)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint (file or sharded directory) and its sidecar."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def net_state(net: Any) -> dict[str, dict]:
    """State dicts of an SSL network's parts (pathfm.ssl.step.SSLNet): backbone, dino_head (, ibot_head)."""
    out = {"backbone": net.backbone.state_dict(), "dino_head": net.dino_head.state_dict()}
    if net.ibot_head is not None:
        out["ibot_head"] = net.ibot_head.state_dict()
    return out


def load_net_state(net: Any, states: dict[str, dict], path: Path) -> None:
    """Load :func:`net_state` output into ``net`` (strict); ConfigError naming ``path`` when it does not fit."""
    from pathfm.backbone.vit import adapt_state_dict
    from pathfm.errors import ConfigError

    try:
        net.backbone.load_state_dict(adapt_state_dict(states["backbone"], net.backbone))
        net.dino_head.load_state_dict(states["dino_head"])
        if net.ibot_head is not None:
            if "ibot_head" not in states:
                raise ConfigError(f"{path}: has no separate iBOT head but loss.separate_ibot_head=true")
            net.ibot_head.load_state_dict(states["ibot_head"])
    except RuntimeError as e:
        raise ConfigError(f"{path}: weights do not fit this config's model/heads: {str(e).splitlines()[0]}") from None


# -------------------------------------------------------------------------------------- save/load
def save_checkpoint(run_dir: str | Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``payload`` (plus format/version/step) atomically with its sha256 sidecar; prune to ``keep``."""
    path = checkpoint_path(run_dir, step)
    payload = {"format": FORMAT, "version": VERSION, "step": int(step), **payload}
    try:
        with atomic_checksummed(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError (inline_container)
        if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        if isinstance(e, RuntimeError) and "inline_container" not in str(e) and "write" not in str(e):
            raise
        path.unlink(missing_ok=True)  # no checkpoint without its sidecar; the previous ones are intact
        previous = [p.name for _, p in list_checkpoints(run_dir)]
        raise CheckpointError(
            f"{path}: could not write the checkpoint of step {step} (disk full or file size limit: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); free space or move the run, then resume "
            f"(resume=True): the last complete checkpoint is {previous[-1] if previous else 'none'}"
        ) from None
    prune(run_dir, keep)
    return path


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file (or sharded directory), oldest first."""
    return RunFolder(run_dir).checkpoints()


def prune(run_dir: str | Path, keep: int) -> None:
    for _, path in list_checkpoints(run_dir)[:-keep]:
        remove_checkpoint(path)


Checksum = Callable[[Path], str]  # how a checkpoint's checksum is computed (default pathfm.io.checksum)


def verify(path: Path, checksum: Checksum | None = None) -> str | None:
    """None if ``path`` matches its sha256 sidecar, else the reason it does not. ``checksum``: how the sum is
    computed (the ranks of a sharded run share it: pathfm.backbone.sharded_checkpoint.shared_checksum)."""
    if not checksum_path(path).exists():
        return "no .sha256 sidecar (the write did not finish)"
    why = checksum_mismatch(path, checksum)
    return f"{why}: corrupt or truncated" if why else None


def load_checkpoint(path: str | Path, *, check: bool = True, checksum: Checksum | None = None) -> dict[str, Any]:
    """Load one checkpoint (CPU tensors). CheckpointError if it is not a valid pathfm checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if check and (why := verify(path, checksum)):
        raise CheckpointError(f"{path}: {why}")
    try:
        obj = torch.load(path / SHARDED_META if path.is_dir() else path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0] if str(e) else e!r})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pathfm training checkpoint")
    if path.is_dir():
        obj["sharded_dir"] = str(path)  # student, teacher and optimizer are in the shards (sharded_checkpoint)
    return obj


def set_aside_unusable(run_dir: str | Path) -> list[Path]:
    """Rename every checkpoint of ``run_dir`` that does not verify (e.g. a write cut short by a killed
    process) and its sidecar to ``*.unusable``, so that a fresh start there is not mistaken for overwriting
    a run. Returns the renamed checkpoint paths."""
    moved = []
    for _, path in list_checkpoints(run_dir):
        if verify(path) is None:
            continue
        for p in (path, checksum_path(path)):
            if p.exists():
                p.rename(p.with_name(p.name + ".unusable"))
        moved.append(path)
    return moved


def latest_valid(run_dir: str | Path, checksum: Checksum | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies and loads, skipping (and logging) corrupt ones; None if none."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, checksum=checksum)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint at step {step}: {e}", stacklevel=2)
    return None
