"""Training-health figure: the ``diag/*`` signals of one or more runs' ``metrics.jsonl`` side by side.

``pathfm analyze health RUN [RUN ...] --out STEM`` draws, per optimizer step, the teacher's DINO target
entropy against ln K (the collapse line), the student's entropy, the per-pair DINO cross-entropy minus
ln K, the teacher's logit spread across images (what centering leaves for the targets), the cosine
between the teacher CLS of different images, and the backbone gradient norm. Keys are documented in
:mod:`pathfm.ssl.diagnostics`.
"""

from __future__ import annotations

import math
from pathlib import Path

from pathfm.errors import PathfmError
from pathfm.io import read_jsonl
from pathfm.records import RunFolder

PANELS: tuple[tuple[str, str], ...] = (
    ("diag/dino_target_entropy", "teacher DINO target entropy (nats)"),
    ("diag/dino_student_entropy", "student DINO entropy (nats)"),
    ("dino_ce_excess", "DINO cross-entropy per pair − ln K"),
    ("diag/teacher_spread_images", "teacher logit spread across images"),
    ("diag/teacher_cls_cosine", "teacher CLS cosine between images"),
    ("grad_norm/backbone", "backbone gradient norm (pre-clip)"),
)


def read_health(run_dir: str | Path) -> dict[str, list[float]]:
    """``{"step": [...], <panel key>: [...]}`` from a run's metrics.jsonl (main and high-res stages)."""
    path = RunFolder(run_dir).metrics
    if not path.exists():
        raise PathfmError(f"{path}: no {path.name}; give a training run directory (runs/<name>)")
    records = [r for r in read_jsonl(path) if "diag/dino_target_entropy" in r]
    if not records:
        raise PathfmError(f"{path}: no diag/* records; the run was made before pathfm logged diagnostics")
    out: dict[str, list[float]] = {"step": [r["step"] for r in records]}
    for key, _ in PANELS:
        if key == "dino_ce_excess":
            out[key] = [r["diag/dino_ce_per_pair"] - r["diag/dino_ln_k"] for r in records]
        else:
            out[key] = [float(r.get(key, math.nan)) for r in records]
    out["ln_k"] = [r["diag/dino_ln_k"] for r in records]
    return out


def plot_health(runs: list[str | Path], stem: str | Path, labels: list[str] | None = None) -> list[Path]:
    """Draw the health panels of ``runs`` (one colour per run) to ``stem``.{pdf,svg,png} (+ .json)."""
    from pathfm.analysis.figures import color, new_figure, save_figure, style

    if labels is not None and len(labels) != len(runs):
        raise PathfmError(f"--label was given {len(labels)} times for {len(runs)} runs; give one per run or none")
    labels = labels or [Path(r).name for r in runs]
    series = [read_health(r) for r in runs]
    with style():
        fig, axes = new_figure("double", aspect=0.5, ncols=3, nrows=2)
        for i, ((key, title), ax) in enumerate(zip(PANELS, axes.flat)):
            for j, (s, label) in enumerate(zip(series, labels)):
                ax.plot(s["step"], s[key], color=color(j), label=label)
            if key in ("diag/dino_target_entropy", "diag/dino_student_entropy"):
                for ln_k in sorted({round(s["ln_k"][-1], 6) for s in series}):
                    ax.axhline(ln_k, color="0.4", linestyle="--", linewidth=0.8)
                    ax.annotate("ln K", (1.0, ln_k), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                                fontsize=6, color="0.3")
            if key == "dino_ce_excess":
                ax.axhline(0.0, color="0.4", linestyle="--", linewidth=0.8)
            if key == "grad_norm/backbone":
                ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("step")
            if i == 0:
                ax.legend(loc="best")
        caption = {"title": "training health", "runs": [str(r) for r in runs], "labels": labels,
                   "panels": [k for k, _ in PANELS]}
        return save_figure(fig, stem, caption)
