"""pathfm backbones in other projects' layouts: timm ``vit_*_patch14[_reg4]_dinov2``, Hugging Face
``Dinov2Model`` / ``Dinov2WithRegistersModel``, and the official DINOv2 hub state dict.

The inverse of :mod:`pathfm.backbone.foreign_weights` (which reads these layouts back): pure functions from a
pathfm (= DINOv2-named) backbone state dict to another state dict, plus the writers of each format's files.

Positional embeddings. pathfm keeps them on the grid they were trained for (16x16 from scratch at 224 px,
37x37 when initialised from DINOv2's hub) and resizes them at every forward with DINOv2's formula (offset
0.1 / no antialias, ``_reg4``: 0.0 / antialias). timm and Hugging Face resize with ``size=`` (timm and
``Dinov2WithRegistersModel``: antialias; ``Dinov2Model``: none), so their result equals pathfm's only where
no resize happens. The timm and hf exports therefore store the embeddings for one image size
(:func:`positions_for_size`, pathfm's own resize computed once when the stored grid differs): at that size
the exported model computes exactly what pathfm computes; at other sizes each library resizes its own way.
The dinov2 export keeps the stored grid: DINOv2's code with the same offset/antialias matches at every size.

Every weights file written here gets a ``.sha256`` sidecar (:func:`pathfm.io.checksum_path`) that pathfm's
readers check (``pathfm eval timm:NAME:FILE`` / ``hf:DIR``, ``model.init_from``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from pathfm.backbone.vit import ARCH_SPECS, interpolate_pos_embed
from pathfm.errors import ConfigError
from pathfm.io import atomic_checksummed, atomic_write_bytes, checksum_path, usual_mode, write_checksum

# pathfm arch -> timm's DINOv2 size word; the ffn each timm model has (giant: SwiGLU, the others: MLP)
TIMM_SIZES = {"vit_small": "small", "vit_base": "base", "vit_large": "large", "vit_giant": "giant"}
TIMM_FFN = {"vit_small": "mlp", "vit_base": "mlp", "vit_large": "mlp", "vit_giant": "swiglu"}
TIMM_PATCH = 14
TIMM_REGISTERS = (0, 4)
WEIGHTS_FILE = "model.safetensors"


# ------------------------------------------------------------------------------------------ names
def timm_architecture(model_cfg: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """timm's DINOv2 architecture for a pathfm model dump and the ``model_args`` that resize it. None for the
    models timm names (e.g. ``vit_base_patch14_reg4_dinov2``); any other width, depth, patch size or register
    count (the pico and tiny smoke models) keeps the vit_small layout (the giant one for SwiGLU) with
    ``embed_dim``/``depth``/``num_heads``/``patch_size``/``reg_tokens`` set, which ``config.json`` stores and
    ``timm.create_model("local-dir:DIR")`` reads back."""
    arch, patch = model_cfg.get("arch"), int(model_cfg.get("patch_size", TIMM_PATCH))
    regs, ffn = int(model_cfg.get("n_registers", 0)), model_cfg.get("ffn", "mlp")
    if arch not in ARCH_SPECS:
        raise ConfigError(f"model.arch={arch!r} is unknown; choose one of {', '.join(ARCH_SPECS)}")
    args: dict[str, int] = {}
    if arch in TIMM_SIZES and ffn == TIMM_FFN[arch]:
        layout = TIMM_SIZES[arch]
    else:
        layout = "giant" if ffn == "swiglu" else "small"
        spec = ARCH_SPECS[arch]
        args.update(embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads)
    if patch != TIMM_PATCH:
        args["patch_size"] = patch
    if regs not in TIMM_REGISTERS:
        args["reg_tokens"] = regs
    return f"vit_{layout}_patch14{'_reg4' if regs else ''}_dinov2", args


TIMM_MODEL_ARGS = ("img_size", "in_chans", "embed_dim", "depth", "num_heads", "patch_size", "reg_tokens")


# -------------------------------------------------------------------------------------- positions
def positions_for_size(
    pos_embed: Tensor, img_size: int, patch_size: int, offset: float, antialias: bool
) -> Tensor:
    """(1, 1+M*M, D) embeddings -> (1, 1+G*G, D) for G = img_size // patch_size, resized as pathfm's forward
    resizes them at that size (unchanged when G == M)."""
    if img_size % patch_size:
        raise ConfigError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
    grid = img_size // patch_size
    patch = interpolate_pos_embed(pos_embed[:, 1:], (grid, grid), offset=offset, antialias=antialias)
    return torch.cat([pos_embed[:, :1], patch], dim=1)


def with_layerscale(state: Mapping[str, Tensor], depth: int, dim: int) -> dict[str, Tensor]:
    """A backbone trained without LayerScale gets gammas of ones (timm's and HF's models always have them;
    multiplying by 1 changes nothing)."""
    out = dict(state)
    for i in range(depth):
        for ls in ("ls1", "ls2"):
            out.setdefault(f"blocks.{i}.{ls}.gamma", torch.ones(dim))
    return out


# ------------------------------------------------------------------------------------- key layouts
def to_timm_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """pathfm/DINOv2 names -> timm ``vit_*_dinov2`` names (the inverse of the importer's ``_from_timm``):
    ``reg_token``, ``mlp.fc1/fc2``; with registers timm keeps patch positions only and the CLS position
    inside ``cls_token``; timm has no ``mask_token`` (it is left out)."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k == "mask_token":
            continue
        k = "reg_token" if k == "register_tokens" else k
        k = k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out[k] = v
    if "reg_token" in out:
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


def to_hf_state(state: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """pathfm/DINOv2 names -> the Hugging Face Hub layout of ``Dinov2Model`` (as in ``facebook/dinov2-*``):
    ``embeddings.*``, ``encoder.layer.N.attention.attention.{query,key,value}`` (pathfm's fused qkv split in
    that order), ``layer_scale{1,2}.lambda1``, ``mlp.fc1/fc2`` or SwiGLU ``mlp.weights_in/weights_out``."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"].reshape(1, -1),
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    if "register_tokens" in state:
        out["embeddings.register_tokens"] = state["register_tokens"]
    renames = {
        "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.w12": "mlp.weights_in", "mlp.w3": "mlp.weights_out",
    }  # fmt: skip
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for q_k_v, t in zip(("query", "key", "value"), state[f"{src}attn.qkv.{part}"].chunk(3, dim=0)):
                out[f"{dst}attention.attention.{q_k_v}.{part}"] = t
            for ours, theirs in renames.items():
                if f"{src}{ours}.{part}" in state:
                    out[f"{dst}{theirs}.{part}"] = state[f"{src}{ours}.{part}"]
        out[f"{dst}layer_scale1.lambda1"] = state[f"{src}ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state[f"{src}ls2.gamma"]
    return out


def hf_config(model_cfg: Mapping[str, Any], img_size: int) -> dict[str, Any]:
    """``config.json`` of a ``Dinov2Model`` (``Dinov2WithRegistersModel`` with registers) for the export."""
    spec = ARCH_SPECS[model_cfg["arch"]]
    regs = int(model_cfg.get("n_registers", 0))
    cfg: dict[str, Any] = {
        "architectures": ["Dinov2WithRegistersModel" if regs else "Dinov2Model"],
        "model_type": "dinov2_with_registers" if regs else "dinov2",
        "hidden_size": spec.embed_dim,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.num_heads,
        "mlp_ratio": 4,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "image_size": img_size,
        "patch_size": int(model_cfg.get("patch_size", 14)),
        "num_channels": 3,
        "qkv_bias": True,
        "layerscale_value": 1.0,
        "drop_path_rate": 0.0,
        "use_swiglu_ffn": model_cfg.get("ffn", "mlp") == "swiglu",
        "torch_dtype": "float32",
    }
    if regs:
        cfg["num_register_tokens"] = regs
    return cfg


def hf_preprocessor_config(img_size: int, mean: float, std: float) -> dict[str, Any]:
    """``preprocessor_config.json``: resize + centre crop to ``img_size``, scale to [0, 1], normalise as
    trained (a square tile is resized to img_size x img_size)."""
    return {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": img_size},
        "resample": 3,  # bicubic
        "do_center_crop": True,
        "crop_size": {"height": img_size, "width": img_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [mean] * 3,
        "image_std": [std] * 3,
        "do_convert_rgb": True,
    }


# ------------------------------------------------------------------------------------------ writers
def _save_safetensors(state: Mapping[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    with atomic_checksummed(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def prepared_state(model: Any, img_size: int | None) -> dict[str, Tensor]:
    """The backbone's state dict with LayerScale gammas present and, when ``img_size`` is given, the
    positional embeddings for that size (see the module docstring)."""
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    state = with_layerscale(state, model.depth, model.embed_dim)
    if img_size is not None:
        state["pos_embed"] = positions_for_size(
            state["pos_embed"], img_size, model.patch_size, model.pos_embed_offset, model.pos_embed_antialias
        )
    return state


def write_timm(model: Any, model_cfg: Mapping[str, Any], out_dir: Path, img_size: int, mean: float, std: float,
               license_id: str) -> str:  # fmt: skip
    """``config.json`` + ``model.safetensors`` in timm's Hub layout (``timm.models.save_for_hf``), built and
    loaded strictly into timm's own model first. Returns the timm architecture name."""
    import timm
    from timm.models import save_for_hf

    name, model_args = timm_architecture(model_cfg)
    net = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0, **model_args)
    net.load_state_dict(to_timm_state(prepared_state(model, img_size)), strict=True)
    pretrained_cfg = {"tag": "pathfm", "license": license_id, "mean": (mean,) * 3, "std": (std,) * 3}
    data_cfg = {"input_size": (3, img_size, img_size), "crop_pct": 1.0, "interpolation": "bicubic",
                "mean": (mean,) * 3, "std": (std,) * 3}  # fmt: skip
    checksum_path(out_dir / WEIGHTS_FILE).unlink(missing_ok=True)  # timm writes the file itself: no stale sidecar
    save_for_hf(net, str(out_dir), model_config={"pretrained_cfg": pretrained_cfg}, safe_serialization=True,
                data_config=data_cfg)  # fmt: skip
    for written in (WEIGHTS_FILE, "config.json"):
        usual_mode(out_dir / written)  # safetensors writes 0600
    write_checksum(out_dir / WEIGHTS_FILE)
    return name


def write_hf(model: Any, model_cfg: Mapping[str, Any], out_dir: Path, img_size: int, mean: float, std: float) -> None:
    """``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` for ``transformers``."""
    state = to_hf_state(prepared_state(model, img_size), model.depth)
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_safetensors(state, out_dir / WEIGHTS_FILE, {"format": "pt"})
    _write_json(out_dir / "config.json", hf_config(model_cfg, img_size))
    _write_json(out_dir / "preprocessor_config.json", hf_preprocessor_config(img_size, mean, std))


def write_dinov2(model: Any, out_dir: Path, file_name: str) -> Path:
    """The official DINOv2 hub layout (pathfm's names; positional grid as stored) as a torch file."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    with atomic_checksummed(path) as tmp:
        torch.save(state, tmp)
    return path


def dinov2_file_name(model_cfg: Mapping[str, Any]) -> str:
    """``dinov2_vitb14_reg4_pretrain.pth`` as the hub names its files; sizes the hub lacks keep pathfm's arch."""
    arch, patch, regs = model_cfg.get("arch", "vit"), int(model_cfg.get("patch_size", 14)), int(model_cfg.get("n_registers", 0))
    size = {"vit_small": "s", "vit_base": "b", "vit_large": "l", "vit_giant": "g"}.get(arch)
    stem = f"vit{size}{patch}" if size else f"{arch}_p{patch}"
    return f"dinov2_{stem}{f'_reg{regs}' if regs else ''}_pretrain.pth"
