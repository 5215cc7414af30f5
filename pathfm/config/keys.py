"""Config keys: the knob aliases (``kde_weight`` -> ``loss.kde_weight``), dotted paths resolved against the tree
(close matches named when a key names no field), and ``key=value`` overrides."""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel

from pathfm.config.renames import renamed_key
from pathfm.config.tree import Config
from pathfm.errors import ConfigError

KNOB_ALIASES: dict[str, str] = {
    "seed": "seed",
    "kde_weight": "loss.kde_weight",
    "kde_kappa": "loss.kde_kappa",
    "koleo_weight": "loss.koleo_weight",
    "min_tissue_fraction": "data.tissue.min_tissue_fraction",
    "hsv_filter": "data.tissue.enabled",
    "h_min": "data.tissue.h_min",
    "h_max": "data.tissue.h_max",
    "s_min": "data.tissue.s_min",
    "s_max": "data.tissue.s_max",
    "v_min": "data.tissue.v_min",
    "v_max": "data.tissue.v_max",
    "hed_strength": "data.hed.strength",
    "hed_p": "data.hed.p",
    "stain_aug": "data.stain_aug.method",
    "vflip": "data.crops.vflip",
    "color_jitter": "data.crops.color_jitter",
    "blur_global1": "data.crops.blur_global1",
    "blur_global2": "data.crops.blur_global2",
    "blur_local": "data.crops.blur_local",
    "momentum_teacher": "optim.momentum_teacher",
    "n_slides": "data.n_slides",
    "cohorts": "data.cohorts",
    "n_tiles": "data.n_tiles",
    "highres": "highres.enabled",
    "highres_steps": "highres.steps",
    "steps": "optim.steps",
    "base_lr": "optim.base_lr",
    "centering": "loss.centering",
    "arch": "model.arch",
}


def resolve_key(key: str) -> str:
    """Map a knob alias (``kde_weight``) or a dotted path (``loss.kde_weight``) to the dotted path,
    raising ConfigError with close matches when the key names no field."""
    dotted = KNOB_ALIASES.get(key, key)
    dotted = renamed_key(dotted)
    node: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            here = ".".join(parts[:i]) or "<root>"
            known = sorted(fields) if fields else []
            import difflib

            close = difflib.get_close_matches(part, list(dict.fromkeys(known + list(KNOB_ALIASES))), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; fields of {here}: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{key}' (no field '{part}' in {here}){hint}")
        ann = fields[part].annotation
        models = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        node = models[0] if models else None  # a section, or an optional one (``GuardsConfig | None``)
    return dotted


def set_dotted(tree: dict, key: str, value: Any, *, resolved: bool = False) -> None:
    """Set ``tree[a][b][c] = value`` for key ``a.b.c`` (an alias is resolved first, unless ``resolved``)."""
    parts = (key if resolved else resolve_key(key)).split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_dotted(cfg: Config | dict, key: str) -> Any:
    node: Any = cfg.model_dump() if isinstance(cfg, Config) else cfg
    for part in resolve_key(key).split("."):
        node = node[part]
    return node


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML (safe)."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. loss.kde_weight=0.1)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': not a valid YAML value ({str(e).splitlines()[0]})") from None
    return out
