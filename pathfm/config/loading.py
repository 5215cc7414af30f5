"""A Config from a preset: the YAML file found (a bundled preset name or a path), its ``base:`` chain merged,
overrides set, the tree validated into one :class:`ConfigError` that names every problem."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pydantic import ValidationError

from pathfm.config.keys import parse_overrides, set_dotted
from pathfm.config.paths import PRESET_DIR, REPO_ROOT
from pathfm.config.renames import rename_deprecated_sections
from pathfm.config.tree import Config
from pathfm.errors import ConfigError


def find_preset(name_or_path: str | Path) -> Path:
    """A preset name (``cpu``: ``pathfm/configs/cpu.yaml``) or a YAML path (relative to the current folder, else
    to the repository root). Something path-like (a path separator, or ending in .yaml/.yml) that does not exist
    is an error naming it, never the bundled preset of the same name."""
    p = Path(name_or_path)
    known = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
    text = str(name_or_path)
    if "/" in text or "\\" in text or p.suffix in (".yaml", ".yml"):
        for cand in (p.expanduser(), REPO_ROOT / p):
            if cand.exists():
                return cand
        where = "" if p.is_absolute() else " (looked in the current folder and the repository root)"
        preset = f"; for the bundled preset, give its name: {p.stem}" if p.stem in known else ""
        raise ConfigError(f"config file '{name_or_path}' does not exist{where}{preset}")
    if (PRESET_DIR / f"{p.name}.yaml").exists():
        return PRESET_DIR / f"{p.name}.yaml"
    if (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    raise ConfigError(f"config '{name_or_path}' not found; give a YAML path or a preset: {', '.join(known)}")


def read_yaml(path: str | Path, *, allow_empty: bool = True) -> dict:
    """A YAML mapping from ``path``. ``allow_empty=False`` (config files): an empty file, or one of only comments,
    is an error instead of an empty mapping (it would silently mean every default)."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(q.name for q in path.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        hint = f"give a file in it ({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''})" if inside else \
            "give the path of a YAML file"
        raise ConfigError(f"{path} is a folder, not a YAML file; {hint} or a preset name")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as a YAML config ({e}); give a readable text file") from None
    if data is None and not allow_empty:
        raise ConfigError(f"{path}: the config file is empty (or only comments), which would silently mean every "
                          "default; give settings (e.g. base: smoke), or write {} to mean all defaults")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def config_from_dict(tree: dict, *, source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        lines = []
        errors = e.errors()
        for err in errors[:MAX_LISTED_ERRORS]:  # a file of 100,000 unknown keys must not print 100,000 lines
            loc = ".".join(str(x) for x in err["loc"])
            got = "" if not loc else f" (got {_clip(repr(err.get('input')))})"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc or '<root>'}: {msg}{got}")
        if len(errors) > MAX_LISTED_ERRORS:
            unknown = sum(err["type"] == "extra_forbidden" for err in errors)
            lines.append(f"  ... and {len(errors) - MAX_LISTED_ERRORS} more ({len(errors)} problems, {unknown} of them "
                         "unknown keys: is this a pathfm config?)")
        if len(lines) == 1:  # one problem: one line
            raise ConfigError(f"{source} is invalid: {lines[0].strip()}") from None
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines)) from None


MAX_LISTED_ERRORS = 20  # validation problems listed in a ConfigError; the rest are counted


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def load_config(preset: str | Path | None = "smoke", overrides: list[str] | dict | None = None, *,
                resolved: bool = False) -> Config:
    """Preset (name or YAML path; a preset may say ``base: other_preset``) + overrides -> Config.
    ``resolved``: the override keys are dotted paths that :func:`resolve_key` already returned (a sweep's
    trial overrides), set as they are instead of being resolved again."""
    tree: dict = {}
    source = "defaults"
    if preset is not None:
        path = find_preset(preset)
        tree = read_yaml(path, allow_empty=False)
        chain = [tree]
        while "base" in chain[-1]:
            chain.append(read_yaml(find_preset(chain[-1].pop("base")), allow_empty=False))
        tree = {}
        for layer in reversed(chain):
            try:
                tree = merge(tree, rename_deprecated_sections(layer))
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
        source = str(path)
    ov = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in ov.items():
        try:
            set_dotted(tree, key, value, resolved=resolved)
        except ConfigError as e:
            raise ConfigError(f"{source} override: {e}") from None
    return config_from_dict(tree, source=source)
