"""``pathfm export``: a finished run's teacher backbone as files other tools load, with a model card.

Formats (``OUT`` defaults to ``RUN/export/<format>``):

* ``pathfm`` (the default): ``teacher_backbone.pt`` as pathfm writes it (``pathfm eval`` / ``model.init_from``);
* ``timm``: ``config.json`` + ``model.safetensors`` for ``timm.create_model("local-dir:OUT", pretrained=True)``
  or ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=OUT/model.safetensors),
  img_size=SIZE, **SIZE_ARGS)`` (``embed_dim``/``depth``/... for a size timm does not name: the card writes them);
* ``hf``: ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` for
  ``transformers.AutoModel.from_pretrained(OUT)`` (``Dinov2Model``; ``Dinov2WithRegistersModel`` with registers);
* ``dinov2``: ``dinov2_<arch>_pretrain.pth``, the official hub key layout (``model.init_from`` reads it back); the
  card names the hub entry and its arguments (``DinoVisionTransformer(...)`` for sizes the hub lacks).

Each also writes ``README.md`` (:mod:`pathfm.export.card`). The exported model computes pathfm's CLS and
patch tokens at ``SIZE`` (default: the run's training resolution); see :mod:`pathfm.backbone.foreign_export` for
what happens at other sizes.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError
from pathfm.records import RunFolder
from pathfm.records.run_folder import TEACHER_BACKBONE_FILE

FORMATS = ("pathfm", "timm", "hf", "dinov2")
DEFAULT_LICENSE = "other"


class ExportError(PathfmError):
    """A run or file that cannot be exported (names the path and what is missing)."""


@dataclass
class ExportResult:
    out_dir: Path
    fmt: str
    files: list[Path]
    img_size: int
    name: str  # timm architecture, HF class or file name


def resolve_backbone_file(source: str | Path) -> Path:
    """The backbone file of ``source``: a finished run directory's ``teacher_backbone.pt``, or a backbone /
    checkpoint file named directly (exported as it is, finished or not)."""
    p = Path(source).expanduser()
    if not p.exists():
        raise ExportError(f"{p}: no such run directory or file (give a run dir, its teacher_backbone.pt or a checkpoint)")
    if p.is_file():
        return p
    folder = RunFolder(p)
    file = folder.teacher_backbone
    ckpts = [path for _, path in folder.checkpoints() if path.is_file()]
    if not file.is_file():
        hint = f"; its newest checkpoint is {ckpts[-1]} (export that file explicitly)" if ckpts else ""
        raise ExportError(f"{p}: no {file.name}: this run has no finished checkpoint{hint}; train it with pathfm train")
    if not folder.done.is_file():
        raise ExportError(
            f"{p}: training has not finished (no {folder.done}); finish it with `pathfm train resume={p}`, or "
            f"export the backbone as it is now by naming the file: pathfm export {file}"
        )
    return file


def copy_checksummed(src: Path, dst: Path) -> None:
    """Copy a weights file with its sidecar (the source's, already verified on reading: a damaged copy is then
    caught by the next reader); a source without one gets one for the copy."""
    from pathfm.io import checksum_path, write_checksum

    checksum_path(dst).unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    if checksum_path(src).is_file():
        shutil.copyfile(checksum_path(src), checksum_path(dst))
    else:
        write_checksum(dst)


DINOV2_HUB_SIZES = {"vit_small": "s", "vit_base": "b", "vit_large": "l", "vit_giant": "g"}
# (offset, antialias) the hub's plain and _reg entries fix (dinov2/hub/backbones.py)
DINOV2_HUB_RESIZE = {0: (0.1, False), 4: (0.0, True)}


def dinov2_constructor(model: Any, model_cfg: dict) -> tuple[str, dict[str, Any]]:
    """How the official DINOv2 code builds the model of a ``--format dinov2`` export: a hub entry
    (``dinov2_vits14_reg``) and the arguments it needs, or ``DinoVisionTransformer`` with every size argument
    for a model the hub does not name (the pico and tiny smoke models, patch 16, other register counts)."""
    from pathfm.backbone.vit import ARCH_SPECS

    arch, patch = str(model_cfg.get("arch")), int(model.patch_size)
    regs, ffn = int(model_cfg.get("n_registers", 0)), model_cfg.get("ffn", "mlp")
    offset, antialias = float(model.pos_embed_offset), bool(model.pos_embed_antialias)
    grid = math.isqrt(model.pos_embed.shape[1] - 1)
    args: dict[str, Any] = {"img_size": grid * patch, "init_values": model_cfg.get("layerscale")}
    hub_ffn = "swiglu" if arch == "vit_giant" else "mlp"
    if arch in DINOV2_HUB_SIZES and patch == 14 and ffn == hub_ffn and regs in DINOV2_HUB_RESIZE:
        entry = f"dinov2_vit{DINOV2_HUB_SIZES[arch]}14{'_reg' if regs else ''}"
        if not regs:
            return entry, {**args, "interpolate_offset": offset, "interpolate_antialias": antialias}
        if (offset, antialias) == DINOV2_HUB_RESIZE[regs]:
            return entry, args
    spec = ARCH_SPECS[arch]
    return "DinoVisionTransformer", {
        **args, "patch_size": patch, "embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads,
        "mlp_ratio": 4, "ffn_layer": "swiglufused" if ffn == "swiglu" else "mlp", "block_chunks": 0,
        "num_register_tokens": regs, "interpolate_offset": offset, "interpolate_antialias": antialias,
    }


def _kwargs(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _load_snippet(fmt: str, out_dir: Path, name: str, img_size: int, model: Any = None, model_cfg: dict | None = None) -> str:
    if fmt == "timm":
        from pathfm.backbone.foreign_export import timm_architecture

        size_args = "".join(f" {k}={v}," for k, v in timm_architecture(model_cfg or {})[1].items())
        return (
            "import timm\n"
            f'model = timm.create_model("local-dir:{out_dir}", pretrained=True)  # size, mean/std from config.json\n'
            "# or by architecture name (give img_size: the dinov2 names default to 518):\n"
            f'model = timm.create_model("{name}", pretrained=True, img_size={img_size}, num_classes=0,{size_args}\n'
            f'                          pretrained_cfg_overlay=dict(file="{out_dir / "model.safetensors"}"))\n'
            "tokens = model.forward_features(x)  # (B, 1 [+4 registers] + N, D): CLS first"
        )
    if fmt == "hf":
        return (
            "from transformers import AutoImageProcessor, AutoModel\n"
            f'model = AutoModel.from_pretrained("{out_dir}")  # {name}\n'
            f'processor = AutoImageProcessor.from_pretrained("{out_dir}")\n'
            "out = model(pixel_values=x).last_hidden_state  # CLS first, then registers, then patch tokens"
        )
    if fmt == "dinov2":
        entry, args = dinov2_constructor(model, model_cfg or {})
        return (
            "import torch\n"
            + (f'backbone = torch.hub.load("facebookresearch/dinov2", "{entry}", pretrained=False, {_kwargs(args)})\n'
               if entry != "DinoVisionTransformer" else
               "# a size the DINOv2 hub does not name: the model class of github.com/facebookresearch/dinov2\n"
               "from dinov2.models.vision_transformer import DinoVisionTransformer\n"
               f"backbone = DinoVisionTransformer({_kwargs(args)})\n")
            + f'backbone.load_state_dict(torch.load("{out_dir / name}"))\n'
            f"# or in pathfm: model.init_from={out_dir / name}"
        )
    return (
        "from pathfm.backbone.backbone_file import load_backbone\n"
        f'model, meta = load_backbone("{RunFolder(out_dir).teacher_backbone}")\n'
        'feats = model.forward_features(x)  # {"cls": (B, D), "patch": (B, N, D)}'
    )


def _pos_embed_note(fmt: str, model, img_size: int) -> str:
    grid = model.pos_embed.shape[1] - 1
    trained = f"offset {model.pos_embed_offset}, antialias {model.pos_embed_antialias}"
    if fmt in ("timm", "hf"):
        return (
            f"Positional embeddings are stored for {img_size} px (grid {img_size // model.patch_size}): at that "
            f"size this export returns the same CLS and patch tokens as pathfm. At other sizes the library "
            f"resizes them its own way (bicubic to the new grid), while pathfm resizes with DINOv2's formula "
            f"({trained}); the tokens then differ slightly."
        )
    return f"Positional embeddings as trained ({grid} positions), resized at every size with DINOv2's formula ({trained})."


def export_run(source: str | Path, fmt: str = "pathfm", out: str | Path | None = None, *,
               img_size: int | None = None, license_id: str = DEFAULT_LICENSE) -> ExportResult:  # fmt: skip
    """Export the teacher backbone of ``source`` (see the module docstring) and write its model card."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    file = resolve_backbone_file(source)
    from pathfm.backbone import foreign_export as fx
    from pathfm.eval.backbones import pathfm_backbone
    from pathfm.export.card import CardInputs, render_card
    from pathfm.io import atomic_write_text

    backbone = pathfm_backbone(file)
    model, model_cfg = backbone.model, dict(backbone.model.cfg or {})
    size = int(img_size or backbone.native_size or 224)
    if size % model.patch_size:
        raise ExportError(f"--img-size {size} is not a multiple of the patch size {model.patch_size}")
    run_dir = backbone.run_dir
    out_dir = Path(out) if out is not None else RunFolder(run_dir or file.parent).export_dir(fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean, std = backbone.mean[0], backbone.std[0]
    if fmt == "timm":
        name = fx.write_timm(model, model_cfg, out_dir, size, mean, std, license_id)
        files = [out_dir / "config.json", out_dir / fx.WEIGHTS_FILE]
    elif fmt == "hf":
        fx.write_hf(model, model_cfg, out_dir, size, mean, std)
        name = fx.hf_config(model_cfg, size)["architectures"][0]
        files = [out_dir / "config.json", out_dir / fx.WEIGHTS_FILE, out_dir / "preprocessor_config.json"]
    elif fmt == "dinov2":
        name = fx.dinov2_file_name(model_cfg)
        files = [fx.write_dinov2(model, out_dir, name)]
    else:
        name = TEACHER_BACKBONE_FILE
        if file.resolve() != (out_dir / name).resolve():
            copy_checksummed(file, out_dir / name)
        files = [out_dir / name]
    card = CardInputs(fmt=fmt, source=str(source), img_size=size, mean=mean, std=std, step=backbone.step,
                      arch=str(model_cfg.get("arch", backbone.arch)), license_id=license_id,
                      load_snippet=_load_snippet(fmt, out_dir, name, size, model, model_cfg),
                      pos_embed_note=_pos_embed_note(fmt, model, size), run_dir=run_dir)  # fmt: skip
    atomic_write_text(out_dir / "README.md", render_card(card))
    return ExportResult(out_dir, fmt, files + [out_dir / "README.md"], size, name)
