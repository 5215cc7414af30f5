"""Where a backbone to evaluate comes from: :func:`load_source` turns what a user names (a run dir, a
backbone / checkpoint file, ``timm:<name>``, ``timm:<name>:<file>``, ``hf:<dir>``, a module) into a
:class:`pathfm.eval.backbones.Backbone`."""

from __future__ import annotations

from pathlib import Path

from pathfm.eval.backbones import Backbone, module_backbone, pathfm_backbone, timm_backbone
from pathfm.eval.foreign_backbones import hf_backbone, timm_file_backbone


def load_source(source) -> Backbone:
    """``timm:<name>``, ``timm:<name>:<file>``, ``hf:<dir>`` (:mod:`pathfm.eval.foreign_backbones`), a run dir,
    a backbone / checkpoint file, a :class:`Backbone` or a module."""
    if isinstance(source, Backbone):
        return source
    if isinstance(source, (str, Path)):
        s = str(source)
        if s.startswith("hf:"):
            return hf_backbone(s.removeprefix("hf:"))
        if s.startswith("timm:") and ":" in s.removeprefix("timm:"):
            return timm_file_backbone(*s.removeprefix("timm:").split(":", 1))
        if s.startswith("timm:"):
            return timm_backbone(s.removeprefix("timm:"))
        return pathfm_backbone(s)
    return module_backbone(source)
