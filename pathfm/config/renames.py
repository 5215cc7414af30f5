"""Config keys that were renamed, and how the old ones are still accepted (with a DeprecationWarning naming the
new key): in a YAML preset or saved run config (:func:`rename_deprecated_sections`) and in a dotted override
(:func:`renamed_key`). :mod:`pathfm.config` applies both.
"""

from __future__ import annotations

import warnings

# Top-level sections that were renamed: old name -> new name. ``eval`` -> ``probe`` (0.3): the in-training probe,
# so that "eval" means only the end-of-trial evaluation.
DEPRECATED_SECTIONS: dict[str, str] = {"eval": "probe"}


def warn_renamed(old: str, new: str) -> None:
    warnings.warn(f"config key '{old}' is deprecated; use '{new}' (the in-training probe config was renamed "
                  f"so that 'eval' means only the end-of-trial evaluation)", DeprecationWarning, stacklevel=4)


def rename_deprecated_sections(tree: dict) -> dict:
    """A config tree with deprecated top-level sections renamed (see :data:`DEPRECATED_SECTIONS`); both the
    old and the new name in one tree is a ValueError naming both."""
    if not any(old in tree for old in DEPRECATED_SECTIONS):
        return tree
    out = dict(tree)
    for old, new in DEPRECATED_SECTIONS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"both '{old}' (deprecated) and '{new}' are given; keep only '{new}'")
        warn_renamed(old, new)
        out[new] = out.pop(old)
    return out


def renamed_key(dotted: str) -> str:
    """A dotted key with a deprecated first section renamed (``eval.every`` -> ``probe.every``, warning once)."""
    head, _, rest = dotted.partition(".")
    if head not in DEPRECATED_SECTIONS:
        return dotted
    warn_renamed(head, DEPRECATED_SECTIONS[head])
    return DEPRECATED_SECTIONS[head] + ("." + rest if rest else "")
