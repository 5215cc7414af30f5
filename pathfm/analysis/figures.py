"""One figure style for every pathfm plot: Okabe-Ito colours (colour-blind safe; Okabe & Ito 2008),
single/double column widths, PDF + SVG + PNG, and the caption data (trial ids, seeds, git commit) stored
in each file's metadata and in a sidecar JSON next to it.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from pathfm.io import atomic_path, atomic_write_json

# Okabe-Ito, reordered so that the low-contrast yellow comes last
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
# the honesty baselines as lines: (colour, line style); Okabe-Ito purple / green, never an arm's colour order
REFERENCE_STYLE = {"random_init": ("#CC79A7", "--"), "color_histogram": ("#009E73", "-.")}
WIDTH_IN = {"single": 3.5, "double": 7.16}  # common journal column widths (inches)
FORMATS = ("pdf", "svg", "png")

_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "legend.frameon": False,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType: editable text in Illustrator/Inkscape
    "svg.fonttype": "none",
}


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return matplotlib, plt


@contextmanager
def style() -> Iterator[None]:
    """The pathfm rc style (fonts, Okabe-Ito colour cycle, light grid) for the figures made inside."""
    matplotlib, plt = _mpl()
    from cycler import cycler

    with matplotlib.rc_context({**_RC, "axes.prop_cycle": cycler(color=OKABE_ITO)}):
        yield


def new_figure(size: Literal["single", "double"] = "single", aspect: float = 0.75, ncols: int = 1, nrows: int = 1):
    """A figure of journal column width (``single`` 3.5 in, ``double`` 7.16 in) and ``aspect`` = h / w."""
    _, plt = _mpl()
    w = WIDTH_IN[size]
    fig, ax = plt.subplots(nrows, ncols, figsize=(w, w * aspect), squeeze=False, layout="constrained")
    return fig, ax


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def git_commit() -> str:
    """Commit of the pathfm checkout (``unknown`` outside git), plus ``-dirty`` for local changes."""
    from pathfm.config import REPO_ROOT

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_figure(fig, stem: str | Path, caption: dict[str, Any], formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write ``stem.{pdf,svg,png}`` atomically with ``caption`` in each file's metadata and in
    ``stem.json``; returns the paths written. ``caption`` should hold what a reader needs to reproduce
    the figure (trial ids, seeds, selection); the git commit is added here."""
    _, plt = _mpl()
    stem = Path(stem)
    caption = {**caption, "git_commit": caption.get("git_commit") or git_commit()}
    text = json.dumps(caption, sort_keys=True, default=str)
    title = str(caption.get("title", stem.name))
    meta = {
        "pdf": {"Title": title, "Subject": text, "Creator": "pathfm"},
        "svg": {"Title": title, "Description": text, "Creator": "pathfm"},
        "png": {"Title": title, "Description": text, "Software": "pathfm"},
    }
    written = []
    for fmt in formats:
        out = stem.with_suffix(f".{fmt}")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, metadata=meta[fmt])
        written.append(out)
    side = stem.with_suffix(".json")
    atomic_write_json(side, caption)
    written.append(side)
    plt.close(fig)
    return written
