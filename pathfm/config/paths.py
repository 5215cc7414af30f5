"""Where pathfm's files are: the bundled presets, the repository root and its samples, and how a path a user
gives is resolved (the current folder, then the repository root)."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).parent.parent / "configs"  # pathfm/configs/*.yaml (package data)
REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO_ROOT / "samples"


def resolve_path(p: str | Path) -> Path:
    """A user path: absolute, else relative to the cwd if it exists there, else to the repository root."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    alt = REPO_ROOT / p
    return alt.resolve() if alt.exists() else p.resolve()
