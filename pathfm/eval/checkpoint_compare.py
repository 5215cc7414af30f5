"""Which checkpoint of a run to keep: the last one, the average of the last K, or the best by the in-training
probe, evaluated side by side on the final tasks (``pathfm analyze checkpoints RUN``).

* ``last``: the newest checkpoint's EMA teacher;
* ``avg_last_K``: the element-wise mean of the teachers of the newest K checkpoints of that stage
  (:func:`pathfm.backbone.averaging.export_average`, written as ``teacher_backbone_avg<K>.pt`` in the run);
* ``best_probe``: the kept checkpoint whose step logged the best in-training probe score
  (``probe/<task>/balanced_accuracy`` in ``metrics.jsonl``). Only checkpoints still on disk can be chosen
  (``run.keep_checkpoints``), and it is left out when the probe task shares tiles with an evaluation task's
  test tiles (:mod:`pathfm.eval.probe_overlap`): picking a checkpoint on the test set would flatter it.

Every candidate is evaluated with the same probes, tasks and fold/probe seeds; the table gives the mean and
standard deviation over folds (x probe seeds) of the balanced accuracy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pathfm.backbone import checkpoint as ckpt
from pathfm.errors import PathfmError
from pathfm.io import read_jsonl
from pathfm.records import RunFolder

PROBE_METRIC = re.compile(r"^probe/(?P<task>[^/]+)/balanced_accuracy$")


@dataclass(frozen=True)
class Candidate:
    name: str
    source: Path
    steps: tuple[int, ...]


def best_probe_step(records: Sequence[dict], kept_steps: Sequence[int]) -> tuple[int, str, float] | None:
    """``(step, metric, value)`` of the kept step with the highest in-training probe balanced accuracy (mean over
    probe tasks when several are logged); None when no kept step logged a probe (pure)."""
    kept = set(kept_steps)
    best: tuple[int, str, float] | None = None
    for rec in records:
        step = rec.get("step")
        scores = {k: v for k, v in rec.items() if PROBE_METRIC.match(k) and isinstance(v, (int, float))}
        if step not in kept or not scores or not all(math.isfinite(v) for v in scores.values()):
            continue
        value = sum(scores.values()) / len(scores)
        if best is None or value > best[2]:
            best = (int(step), ",".join(sorted(scores)), float(value))
    return best


def probe_tasks_of(records: Sequence[dict]) -> list[str]:
    """The in-training probe tasks a run logged (from its metric names)."""
    return sorted({m.group("task") for rec in records for k in rec if (m := PROBE_METRIC.match(k))})


def candidates(run_dir: str | Path, k: int, eval_tasks: Sequence[str]) -> tuple[list[Candidate], list[str]]:
    """The checkpoints to compare, and notes on the ones that could not be built."""
    from pathfm.backbone.averaging import export_average, last_checkpoints
    from pathfm.eval.probe_overlap import probe_test_overlap

    run_dir = Path(run_dir)
    kept = ckpt.list_checkpoints(run_dir)
    if not kept:
        raise PathfmError(f"{run_dir}: no checkpoints in {ckpt.checkpoint_dir(run_dir)}; is it a training run folder?")
    step, path = kept[-1]
    out, notes = [Candidate("last", path, (step,))], []
    try:
        steps = tuple(s for s, _ in last_checkpoints(run_dir, k))
        out.append(Candidate(f"avg_last_{k}", export_average(run_dir, k), steps))
    except PathfmError as e:
        notes.append(f"avg_last_{k}: {e}")
    records = read_jsonl(RunFolder(run_dir).metrics)
    overlap = probe_test_overlap(probe_tasks_of(records), eval_tasks)
    best = best_probe_step(records, [s for s, _ in kept])
    if overlap:
        p, e, n = overlap[0]
        notes.append(f"best_probe: left out, the in-training probe task '{p}' holds {n} tiles that '{e}' tests on")
    elif best is None:
        notes.append("best_probe: no kept checkpoint has an in-training probe score (train with probe.every dividing "
                     "run.checkpoint_every and run.keep_checkpoints large enough)")
    else:
        by_step = dict(kept)
        out.append(Candidate("best_probe", by_step[best[0]], (best[0],)))
        notes.append(f"best_probe: step {best[0]} ({best[1]} = {best[2]:.4f})")
    return out, notes


def compare_checkpoints(run_dir: str | Path, tasks: Sequence[str], probes: Sequence[str] = ("linear",),
                        seeds: Sequence[int] = (0,), k: int = 3, device: str = "auto"):
    """Evaluate every candidate (:func:`candidates`); returns ``(table rows as a polars frame, notes)`` with
    columns ``candidate, steps, task, probe, mean, sd, n`` (balanced accuracy over folds x probe seeds)."""
    import polars as pl

    from pathfm.eval import evaluate

    cands, notes = candidates(run_dir, k, tasks)
    frames = []
    for c in cands:
        df = evaluate(str(c.source), tasks=list(tasks), probes=list(probes), seeds=list(seeds), baselines=False,
                      progress=False, verbose=False, device=device, output=None)
        frames.append(df.filter(pl.col("metric") == "balanced_accuracy")
                      .group_by(["task", "probe"], maintain_order=True)
                      .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"), pl.len().alias("n"))
                      .with_columns(pl.lit(c.name).alias("candidate"),
                                    pl.lit(",".join(map(str, c.steps))).alias("steps")))
    table = pl.concat(frames).select(["candidate", "steps", "task", "probe", "mean", "sd", "n"])
    return table, notes


def comparison_markdown(table, notes: Sequence[str]) -> str:
    """The comparison as a Markdown table (one row per candidate, one column per task/probe) plus its notes."""
    cols = list(dict.fromkeys(f"{t} {p}" for t, p in zip(table["task"], table["probe"])))
    lines = ["| checkpoint | steps | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name in dict.fromkeys(table["candidate"]):
        sub = table.filter(table["candidate"] == name)
        cells = {f"{r['task']} {r['probe']}": f"{r['mean']:.3f} ± {(r['sd'] or 0.0):.3f} (n={r['n']})"
                 for r in sub.iter_rows(named=True)}
        lines.append(f"| {name} | {sub['steps'][0]} | " + " | ".join(cells.get(c, "n/a") for c in cols) + " |")
    lines.append("")
    lines.append("Balanced accuracy, mean ± sd over evaluation folds x probe seeds; same folds for every row.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
