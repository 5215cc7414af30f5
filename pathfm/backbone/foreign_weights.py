"""Backbone weights from elsewhere: DINOv2 hub checkpoints, timm's DINOv2 ports, pathfm's own files.

``model.init_from`` accepts

* a path to a torch file: a pathfm exported backbone, an official DINOv2 hub checkpoint
  (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``: pathfm's parameter names are DINOv2's), a DINOv2
  training checkpoint (``teacher.backbone.*`` / ``backbone.*`` keys, chunked ``blocks.C.I.*`` blocks), or a
  timm ``vit_*_patch14[_reg4]_dinov2`` state dict (``reg_token``, ``mlp.fc1/fc2``, and in the register
  models no CLS position: timm folds it into ``cls_token`` and keeps patch positions only);
* a name ``dinov2:vits14`` ... ``dinov2:vitg14_reg4``, found as ``dinov2_<name>_pretrain.pth`` in
  ``$PATHFM_WEIGHTS_DIR`` or the torch hub cache (``torch.hub.get_dir()/checkpoints``, where
  ``torch.hub.load`` keeps it). Loading never downloads: a missing file is an error naming the file, its
  official address, where to put it and ``pathfm weights fetch`` (:mod:`pathfm.backbone.weights_download`,
  checksum-verified).

Loading is strict: a weight the model has and the file lacks (missing) or the file has and the model lacks
(unused) is an error unless a glob in ``model.init_ignore`` names it; the only exception is what a layout
cannot hold by design (timm has no iBOT ``mask_token``: it keeps DINOv2's zero init, and the report says
so). Every load reports how many tensors it took. The architecture a file implies (width, depth, patch,
registers, FFN) is checked against the config first, with the fields to set in the error.

Positional-embedding resize: DINOv2's hub models were trained with offset 0.1 / no antialias, the
``_reg4`` ones with offset 0.0 / antialias (``dinov2/hub/backbones.py``); an imported file brings those
settings unless the config sets ``model.pos_embed_offset`` / ``pos_embed_antialias`` itself.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from pathfm.backbone import checkpoint as ckpt
from pathfm.errors import ConfigError
from pathfm.backbone.vit import (
    ARCH_SPECS,
    POS_EMBED_ANTIALIAS,
    POS_EMBED_OFFSET,
    VisionTransformer,
    adapt_state_dict,
    set_pos_embed_interpolation,
)

DINOV2_NAMES = tuple(f"vit{s}14{r}" for s in "sblg" for r in ("", "_reg4"))
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/dinov2_{name}_pretrain.pth"
WEIGHTS_DIR_ENV = "PATHFM_WEIGHTS_DIR"
# (offset, antialias) the DINOv2 hub models were trained with
DINOV2_POS_EMBED = {False: (POS_EMBED_OFFSET, POS_EMBED_ANTIALIAS), True: (0.0, True)}  # key: has registers


@dataclass(frozen=True)
class ConvertedWeights:
    """A backbone state dict in pathfm's layout, and what the source said about itself."""

    state: dict[str, Tensor]
    layout: str  # "dinov2" (hub, training checkpoints and pathfm's own) or "timm"
    pos_embed: tuple[float, bool] | None  # (offset, antialias) the weights were trained with, if known
    kept_init: tuple[str, ...] = ()  # weights the layout cannot hold; they keep the model's init
    dropped: int = 0  # non-backbone tensors (heads) left out of a training checkpoint


# ------------------------------------------------------------------------------------------ names
def dinov2_file_name(name: str) -> str:
    """``vitg14_reg4`` -> ``dinov2_vitg14_reg4_pretrain.pth``."""
    return f"dinov2_{name}_pretrain.pth"


def weights_search_dirs() -> list[Path]:
    """Where ``dinov2:NAME`` files are looked for, in order."""
    dirs = [Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return dirs + [Path(torch.hub.get_dir()) / "checkpoints"]


def resolve_weights_source(source: str) -> Path:
    """The file ``model.init_from`` names: a ``dinov2:NAME`` looked up locally, else a path that must exist."""
    from pathfm.config import resolve_path

    if source.startswith("dinov2:"):
        name = source.split(":", 1)[1]
        if name not in DINOV2_NAMES:
            raise ConfigError(f"model.init_from={source}: unknown DINOv2 model; choose dinov2:{' / dinov2:'.join(DINOV2_NAMES)}")
        file_name = dinov2_file_name(name)
        dirs = weights_search_dirs()
        for d in dirs:
            if (d / file_name).is_file():
                return d / file_name
        url = DINOV2_URL.format(arch=name.removesuffix("_reg4"), name=name)
        raise ConfigError(
            f"model.init_from={source}: {file_name} not found in {', '.join(str(d) for d in dirs)}; download "
            f"it from {url} into {dirs[-1]} (torch hub's cache) or into a folder named by ${WEIGHTS_DIR_ENV}: "
            f"`pathfm weights fetch {source}` does that and verifies its sha256"
        )
    path = resolve_path(source)
    if not path.exists():
        raise ConfigError(f"model.init_from={source}: no such file")
    return path


def read_weights_file(path: Path) -> Any:
    """``torch.load`` without running pickled code, after checking the file's ``.sha256`` sidecar (a mismatch
    is a PathfmError; a pathfm file without one is read with a warning, other projects' files have none); a
    ConfigError naming the file if it does not load."""
    from pathfm.io import verify_checksum, warn_unverified

    verified = verify_checksum(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"model.init_from={path}: not a loadable torch file ({type(e).__name__})") from None
    if verified is None and isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("pathfm-"):
        warn_unverified(path)
    return obj


# ------------------------------------------------------------------------------------- conversion
def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def declared_pos_embed(model_dump: Mapping[str, Any] | None) -> tuple[float, bool]:
    """(offset, antialias) of a pathfm model dump; files from before these settings: DINOv2's defaults."""
    m = model_dump or {}
    offset, antialias = m.get("pos_embed_offset"), m.get("pos_embed_antialias")
    return (
        POS_EMBED_OFFSET if offset is None else float(offset),
        POS_EMBED_ANTIALIAS if antialias is None else bool(antialias),
    )


def _backbone_tensors(obj: Any, path: Path) -> tuple[dict[str, Tensor], tuple[float, bool] | None, int]:
    """The backbone state dict inside a file, the pos-embed settings it declares, and the tensors dropped."""
    declared = None
    if isinstance(obj, Mapping) and obj.get("format") == "pathfm-backbone":
        declared = declared_pos_embed(obj.get("model"))
        obj = obj.get("state_dict")
    elif isinstance(obj, Mapping) and _is_tensor_dict(obj.get("teacher")):
        obj = obj["teacher"]  # DINOv2 eval's teacher_checkpoint.pth
    elif isinstance(obj, Mapping) and _is_tensor_dict(obj.get("model")):
        obj = obj["model"]  # DINOv2 training checkpoint: student.* and teacher.*
    if not _is_tensor_dict(obj):
        raise ConfigError(f"model.init_from={path}: neither a pathfm file nor a backbone state dict")
    state = dict(obj)
    for prefix in ("teacher.backbone.", "backbone.", "module."):
        if any(k.startswith(prefix) for k in state):
            kept = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            return kept, declared, len(state) - len(kept)
    return state, declared, 0


def _unchunk(key: str) -> str:
    """DINOv2's chunked blocks (FSDP training, ``block_chunks > 0``): ``blocks.1.7.x`` -> ``blocks.7.x``."""
    return re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)


def _from_timm(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """timm ``vit_*_dinov2`` names -> DINOv2 names (registers, packed SwiGLU, folded CLS position)."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        k = "register_tokens" if k == "reg_token" else k
        m = re.match(r"^(blocks\.\d+\.mlp)\.(fc1|fc2)\.(weight|bias)$", k)
        if m:
            fc1 = state[f"{m.group(1)}.fc1.weight"]
            fc2 = state[f"{m.group(1)}.fc2.weight"]
            if fc1.shape[0] == 2 * fc2.shape[1]:  # SwiGLUPacked: fc1 = [x1 | x2], out = fc2(silu(x1) * x2)
                k = f"{m.group(1)}.{'w12' if m.group(2) == 'fc1' else 'w3'}.{m.group(3)}"
        out[k] = v
    pe, cls = out.get("pos_embed"), out.get("cls_token")
    if pe is not None and cls is not None and math.isqrt(pe.shape[1]) ** 2 == pe.shape[1]:
        # no_embed_class: patch positions only, the CLS position already inside cls_token -> a zero CLS slot
        out["pos_embed"] = torch.cat([pe.new_zeros(1, 1, pe.shape[-1]), pe], dim=1)
    return out, ("mask_token",)


def convert_state_dict(obj: Any, path: Path) -> ConvertedWeights:
    """Any supported file content -> a backbone state dict in pathfm's (= DINOv2's) names."""
    state, declared, dropped = _backbone_tensors(obj, path)
    state = {_unchunk(k): v for k, v in state.items()}
    if "reg_token" in state or ("cls_token" in state and "mask_token" not in state):
        state, kept_init = _from_timm(state)
        layout = "timm"
    else:
        kept_init, layout = (), "dinov2"
    if declared is None and "cls_token" in state:
        declared = DINOV2_POS_EMBED["register_tokens" in state]
    return ConvertedWeights(state, layout, declared, kept_init, dropped)


# --------------------------------------------------------------------------------- architecture
def describe_architecture(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Width, depth, patch, registers and FFN a backbone state dict implies (None where it cannot tell)."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k))}
    patch = state.get("patch_embed.proj.weight")
    regs = state.get("register_tokens")
    cls = state.get("cls_token")
    return {
        "embed_dim": int(cls.shape[-1]) if cls is not None else None,
        "depth": max(blocks) + 1 if blocks else None,
        "patch_size": int(patch.shape[-1]) if patch is not None else None,
        "n_registers": int(regs.shape[1]) if regs is not None else 0,
        "ffn": "swiglu" if "blocks.0.mlp.w12.weight" in state else "mlp",
    }


def check_architecture(state: Mapping[str, Tensor], model: VisionTransformer, source: str) -> None:
    """ConfigError naming the model.* fields to set when the file holds another architecture."""
    have = describe_architecture(state)
    want = {
        "embed_dim": model.embed_dim,
        "depth": model.depth,
        "patch_size": model.patch_size,
        "n_registers": model.n_registers,
        "ffn": "swiglu" if "blocks.0.mlp.w12.weight" in model.state_dict() else "mlp",
    }
    diff = {k: (have[k], want[k]) for k in want if have[k] is not None and have[k] != want[k]}
    if not diff:
        return
    arch = next((n for n, s in ARCH_SPECS.items() if (s.embed_dim, s.depth) == (have["embed_dim"], have["depth"])), None)
    fixes = []
    if "embed_dim" in diff or "depth" in diff:
        fixes.append(f"model.arch={arch}" if arch else f"an arch of width {have['embed_dim']} and depth {have['depth']}")
    fixes += [f"model.{k}={have[k]}" for k in ("patch_size", "n_registers", "ffn") if k in diff]
    found = ", ".join(f"{k} {a} (config: {b})" for k, (a, b) in diff.items())
    raise ConfigError(f"model.init_from={source}: the weights are a different ViT: {found}; set {' '.join(fixes)}")


# ---------------------------------------------------------------------------------- strict load
def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_strict(
    model: VisionTransformer, state: Mapping[str, Tensor], source: str, ignore: Sequence[str] = (), kept_init: Sequence[str] = ()
) -> int:
    """Load ``state`` into ``model``; every missing, unused or mis-shaped weight not named by ``ignore`` is a
    ConfigError listing them. ``kept_init``: weights the source layout cannot hold. Returns tensors loaded."""
    state = adapt_state_dict(dict(state), model)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in kept_init and not _matches(k, ignore))
    unused = sorted(k for k in state if k not in own and not _matches(k, ignore))
    misfit = {k for k in state if k in own and state[k].shape != own[k].shape}
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in misfit if not _matches(k, ignore))
    problems = [(what, keys) for what, keys in (("missing", missing), ("unused", unused), ("mis-shaped", wrong)) if keys]
    if problems:
        listing = "; ".join(f"{len(keys)} {what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" for what, keys in problems)
        raise ConfigError(
            f"model.init_from={source}: the weights do not fit the model ({listing}); loading is strict: "
            "name weights to skip in model.init_ignore (glob patterns, e.g. ['head.*'])"
        )
    take = {k: v for k, v in state.items() if k in own and k not in misfit}
    model.load_state_dict(take, strict=False)
    return len(take)


def load_backbone_weights(
    backbones: Sequence[VisionTransformer], obj: Any, path: Path, model_cfg: Any, source: str
) -> str:
    """Convert ``obj`` (a file's content), load it strictly into every backbone (student and teacher), apply
    the pos-embed resize the weights were trained with unless the config sets one. Returns a one-line note."""
    converted = convert_state_dict(obj, path)
    ignore = list(getattr(model_cfg, "init_ignore", None) or [])
    check_architecture(converted.state, backbones[0], source)
    n = 0
    for backbone in backbones:
        n = load_strict(backbone, converted.state, source, ignore, converted.kept_init)
        apply_pos_embed_settings(backbone, model_cfg, converted.pos_embed)
    b = backbones[0]
    parts = [f"{n} tensors ({converted.layout} layout) into the backbone from {path}"]
    if converted.kept_init:
        parts.append(f"{', '.join(converted.kept_init)} not in this layout: kept at init")
    if converted.dropped:
        parts.append(f"{converted.dropped} non-backbone tensors left out")
    parts.append(f"pos-embed resize offset {b.pos_embed_offset}, antialias {b.pos_embed_antialias}")
    return "; ".join(parts)


def apply_pos_embed_settings(model: VisionTransformer, model_cfg: Any, trained_with: tuple[float, bool] | None) -> None:
    """The weights' own resize settings, for each one the config leaves null."""
    if trained_with is None:
        return
    offset = getattr(model_cfg, "pos_embed_offset", None)
    antialias = getattr(model_cfg, "pos_embed_antialias", None)
    set_pos_embed_interpolation(
        model, trained_with[0] if offset is None else offset, trained_with[1] if antialias is None else antialias
    )


def load_init_weights(student: Any, teacher: Any, model_cfg: Any) -> str:
    """``model.init_from`` for the trainer: a pathfm training checkpoint (student, teacher and heads), else
    backbone weights of any layout this module reads (strict), into both networks (pathfm.ssl.step.SSLNet).
    Returns a one-line description."""
    from pathfm.backbone import checkpoint as ckpt

    path = resolve_weights_source(model_cfg.init_from)
    obj = read_weights_file(path)
    if isinstance(obj, dict) and obj.get("format") == ckpt.FORMAT:
        for net, key in ((student, "student"), (teacher, "teacher")):
            ckpt.load_net_state(net, obj[key], path)
            apply_pos_embed_settings(net.backbone, model_cfg, declared_pos_embed(obj.get("backbone_model")))
        n = sum(len(states) for states in obj["student"].values())
        return f"student, teacher and heads ({n} tensors each, strict) from checkpoint {path} (step {obj.get('step')})"
    return load_backbone_weights([student.backbone, teacher.backbone], obj, path, model_cfg, model_cfg.init_from)
