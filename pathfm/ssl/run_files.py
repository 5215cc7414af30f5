"""The run directory's files around training (the layout is in pathfm.ssl.trainer's docstring): whether a
run may start or resume there, the record of the slides it trains on, and the config and metrics of a resumed
run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pathfm.backbone import checkpoint as ckpt
from pathfm.errors import PathfmError
from pathfm.io import atomic_write_text, read_jsonl
from pathfm.records import RunFolder


def prepare_run_dir(run_dir: Path, resume: bool | str | Path,
                    checksum: ckpt.Checksum | None = None) -> tuple[Path, dict] | None:
    """Validate the run dir against ``resume`` and return the checkpoint to resume from (or None);
    ``checksum``: how checkpoints are verified (every rank of a distributed run calls this together)."""
    if resume is False or resume is None:
        if ckpt.list_checkpoints(run_dir):
            raise PathfmError(
                f"{run_dir} already holds checkpoints; continue it with resume=True (CLI: resume={run_dir}) "
                "or choose a new run directory"
            )
        return None
    if resume is True:
        found = ckpt.latest_valid(run_dir, checksum)
        if found is None:
            raise ckpt.CheckpointError(f"{RunFolder(run_dir).checkpoints_dir}: no valid checkpoint to resume from")
        return found
    path = Path(resume)
    return path, ckpt.load_checkpoint(path, checksum=checksum)


def _leaf(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def update_run_config(cfg: Any, run_dir: Path, step: int) -> dict[str, list]:
    """A run resumed with another config (overrides on ``resume=RUN``): ``config.yaml`` rewritten atomically with
    the config it trains with from now on, and what changed appended to ``config_changes.jsonl`` (``{"time",
    "step", "changed": {dotted key: [old, new]}}``). Returns the changes ({} when none: nothing is written)."""
    import time

    from pathfm.config import config_from_dict, read_yaml
    from pathfm.io import append_jsonl
    from pathfm.tracking import flatten_params

    folder = RunFolder(run_dir)
    path = folder.config
    new = cfg.model_dump(mode="json")
    try:  # the saved config as this pathfm reads it, so that only real changes count (not new defaults)
        old = config_from_dict(read_yaml(path), source=str(path)).model_dump(mode="json") if path.exists() else {}
    except PathfmError:
        old = read_yaml(path)
    flat_old, flat_new = flatten_params(old), flatten_params(new)
    changed = {k: [_leaf(old, k), _leaf(new, k)] for k in sorted(flat_old.keys() | flat_new.keys())
               if flat_old.get(k) != flat_new.get(k)}
    if changed:
        atomic_write_text(path, cfg.to_yaml())
        append_jsonl(folder.config_changes, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": int(step),
                                             "changed": changed})
    return changed


def record_training_slides(cfg: Any, run_dir: Path, only_if_missing: bool = False) -> None:
    """``training_slides.csv``: the slides and patients this run trains on (pathfm.data.provenance)."""
    from pathfm.data.provenance import training_entries, write_training_slides

    if not (only_if_missing and RunFolder(run_dir).training_slides.exists()):
        write_training_slides(training_entries(cfg.data), run_dir)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from (they will be logged again)."""
    records = read_jsonl(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) != len(records):
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_text(path, text)


def start_run_files(cfg: Any, run_dir: Path) -> None:
    """A new run's folder: created, its resolved config.yaml and its training-slides record written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RunFolder(run_dir).config, cfg.to_yaml())
    record_training_slides(cfg, run_dir)


def continue_run_files(cfg: Any, run_dir: Path, step: int) -> None:
    """A resumed run's folder at ``step``: config.yaml updated (a change is printed and recorded),
    metrics.jsonl cut back to ``step``, DONE removed, the training-slides record written if missing (a run
    started before the record existed)."""
    folder = RunFolder(run_dir)
    changed = update_run_config(cfg, run_dir, step)
    if changed:
        print(f"resumed at step {step} with a changed config (config.yaml rewritten, {folder.config_changes.name} "
              "records it): " + "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()), file=sys.stderr,
              flush=True)
    truncate_metrics(folder.metrics, step)
    folder.done.unlink(missing_ok=True)
    record_training_slides(cfg, run_dir, only_if_missing=True)
