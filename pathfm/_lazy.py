"""Lazy package exports: ``from pathfm.eval import evaluate`` without importing torch/Ray at package import."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """Return ``(__getattr__, __all__)`` for a package whose names live in the given submodules."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module '{package}' has no attribute {name!r}")

    return __getattr__, sorted(exports)
