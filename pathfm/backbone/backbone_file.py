"""Exported backbones: the one file format evaluation reads.

``{"format": "pathfm-backbone", "version": 1, "model": cfg.model dump, "state_dict": {...}, "step": int,
"config_sha": str}``, written atomically with a ``.sha256`` sidecar (:func:`pathfm.io.checksum_path`), read
with ``torch.load(weights_only=True)`` (no pickled code runs) after the sidecar is checked (a mismatch is an
error, a file without one is read with a warning). :func:`load_backbone` also accepts a pathfm training
checkpoint (it takes the teacher backbone).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathfm.backbone.vit import VisionTransformer, adapt_state_dict, build_backbone
from pathfm.errors import PathfmError
from pathfm.io import atomic_checksummed, verify_checksum, warn_unverified
from pathfm.records.run_folder import TEACHER_BACKBONE_FILE

FORMAT = "pathfm-backbone"
VERSION = 1
CHECKPOINT_FORMAT = "pathfm-checkpoint"


class BackboneFileError(PathfmError):
    """A file that is not a pathfm backbone/checkpoint, or one that does not fit its architecture."""


def config_sha(cfg: Any) -> str:
    """A short stable hash of a config (a pydantic model or a dict)."""
    d = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a backbone, unwrapped from DDP / torch.compile, detached, on the CPU."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


def export_backbone(
    model: VisionTransformer,
    path: str | Path,
    *,
    step: int = 0,
    config_sha: str = "",
    model_cfg: Any = None,
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (usually the EMA teacher backbone) to ``path`` atomically; returns the path.
    ``extra``: further plain entries for the file (e.g. ``averaged_steps``), returned in load_backbone's meta.
    ``state_dict``: the weights to write instead of ``model``'s own (a sharded model's gathered full state)."""
    inner = getattr(model, "module", model)
    cfg = model_cfg if model_cfg is not None else getattr(inner, "cfg", None)
    if cfg is None:
        raise ValueError("export_backbone needs model_cfg for a backbone not built by build_backbone")
    cfg = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": cfg,
        "state_dict": _plain_state_dict(model) if state_dict is None else state_dict,
        "step": int(step),
        "config_sha": str(config_sha),
        **(extra or {}),
    }
    path = Path(path)
    with atomic_checksummed(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read(path: Path) -> tuple[Any, str | None]:
    """The file's content and its verified sha256 (None: no sidecar)."""
    if not path.exists():
        raise BackboneFileError(f"{path}: no such file (give an exported teacher_backbone.pt or a checkpoint)")
    digest = verify_checksum(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), digest
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackboneFileError(
            f"{path}: not a readable pathfm backbone ({msg}); export one with pathfm train "
            f"(run_dir/{TEACHER_BACKBONE_FILE}) or pathfm.backbone.backbone_file.export_backbone"
        ) from None


def load_backbone(path: str | Path, *, strict: bool = True) -> tuple[VisionTransformer, dict]:
    """Load an exported backbone (or the teacher backbone of a pathfm checkpoint) in eval mode.

    Returns ``(model, meta)``; ``meta`` holds format, version, model (the config dump), step, config_sha and
    sha256 (the file's, when its sidecar verified it). Raises a PathfmError when the file does not match its
    sidecar, :class:`BackboneFileError` for files that are not ours or whose weights do not fit the
    architecture they declare.
    """
    path = Path(path)
    obj, digest = _read(path)
    if not isinstance(obj, dict) or obj.get("format") not in (FORMAT, CHECKPOINT_FORMAT):
        raise BackboneFileError(
            f"{path}: not a pathfm backbone (no 'format': '{FORMAT}' entry); other projects' weights "
            "must be converted, e.g. build_backbone(cfg.model) + load_state_dict"
        )
    if digest is None:
        warn_unverified(path)
    if obj["format"] == CHECKPOINT_FORMAT:
        state = obj["teacher"]["backbone"]
        model_cfg = obj.get("backbone_model") or obj["model"]  # the former holds resolved settings
    else:
        if int(obj.get("version", 0)) > VERSION:
            raise BackboneFileError(f"{path}: backbone format version {obj['version']} is newer than this pathfm")
        state = obj["state_dict"]
        model_cfg = obj["model"]
    try:
        model = build_backbone(model_cfg, drop_path=0.0)
    except PathfmError as e:
        raise BackboneFileError(f"{path}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(adapt_state_dict(state, model), strict=strict)
    except (RuntimeError, ValueError) as e:
        first = str(e).splitlines()[1:3] or str(e).splitlines()[:1]
        raise BackboneFileError(
            f"{path}: weights do not fit the declared architecture {model_cfg.get('arch')}/"
            f"{model_cfg.get('patch_size')}: {' '.join(s.strip() for s in first)}"
        ) from None
    model.eval()
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "student", "teacher", "optimizer")}
    meta.setdefault("step", int(obj.get("step", 0)))
    if digest is not None:
        meta["sha256"] = digest
    return model, meta
