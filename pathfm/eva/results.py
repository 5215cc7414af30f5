"""Running eva's ``predict_fit`` on a config from :mod:`pathfm.eva.config` and turning eva's ``results.json``
into pathfm's evaluation rows (:data:`pathfm.results.EVAL_SCHEMA`), so ``pathfm analyze`` tables hold eva's
numbers beside pathfm's.

eva reports, per validation/test dataset, each metric's value for every head run (``n_runs`` seeds). Each run
becomes one row with ``probe = "eva_linear"``, ``fold`` = the run index, ``task = "eva:<task>"``. Metric names
map to pathfm's: eva's macro ``MulticlassAccuracy`` (the mean of per-class recalls) and
``BinaryBalancedAccuracy`` are ``balanced_accuracy``; the rest keep eva's name in snake case.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pathfm.errors import PathfmError
from pathfm.progress import run_with_heartbeat

EVA_PROBE = "eva_linear"
METRIC_NAMES = {"MulticlassAccuracy": "balanced_accuracy", "BinaryBalancedAccuracy": "balanced_accuracy",
                "BinaryAccuracy": "accuracy", "MulticlassF1Score": "macro_f1", "BinaryF1Score": "f1",
                "BinaryAUROC": "auroc"}  # fmt: skip


def metric_name(eva_key: str) -> str:
    """``val/MulticlassAccuracy`` -> ``balanced_accuracy``; unknown names in snake case (``val/AverageLoss`` ->
    ``average_loss``)."""
    base = eva_key.rsplit("/", 1)[-1]
    return METRIC_NAMES.get(base, re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower())


def run_eva(config_path: str | Path, *, timeout_s: float | None = None) -> Path:
    """Run ``python -m eva predict_fit --config CONFIG`` (a child process: eva's CLI owns its process) and
    return the ``results.json`` it wrote (the newest under the config's ``default_root_dir``)."""
    import yaml

    config_path = Path(config_path)
    cfg = yaml.safe_load(config_path.read_text())
    log_root = Path(cfg["trainer"]["init_args"]["default_root_dir"])
    before = set(log_root.rglob("results.json")) if log_root.exists() else set()
    code, output = run_with_heartbeat([sys.executable, "-m", "eva", "predict_fit", "--config", str(config_path)],
                                      "eva predict_fit", timeout_s=timeout_s)
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise PathfmError(f"eva predict_fit --config {config_path} failed (exit {code}):\n{tail}")
    new = sorted(set(log_root.rglob("results.json")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise PathfmError(f"eva finished but wrote no results.json under {log_root}")
    return new[-1]


def eva_rows(results_json: str | Path, *, source: str, backbone: str, task: str, step: int = 0,
             n_train: int = 0, n_test: int = 0) -> list[dict]:
    """pathfm evaluation rows from one eva ``results.json`` (see the module docstring). Only the
    validation stage (and the test stage, as ``task:test``) is read; the loss is left out."""
    data = json.loads(Path(results_json).read_text())
    rows = []
    for stage, per_dataset in (data.get("metrics") or {}).items():
        for metrics in per_dataset:
            for key, stats in metrics.items():
                name = metric_name(key)
                if name == "average_loss":
                    continue
                for run, value in enumerate(stats.get("values", [])):
                    rows.append({"source": source, "backbone": backbone,
                                 "task": f"eva:{task}" + (":test" if stage == "test" else ""), "probe": EVA_PROBE,
                                 "fold": run, "metric": name, "value": float(value), "step": step,
                                 "n_train": n_train, "n_test": n_test})  # fmt: skip
    if not rows:
        raise PathfmError(f"{results_json}: no metrics in eva's results (keys: {sorted(data)})")
    return rows


def read_eva_embeddings(embeddings_root: str | Path) -> dict[str, tuple]:
    """eva's written embeddings (``manifest.csv`` + one ``.pt`` per image) as ``{split: (X float32 (n, d),
    y int64 (n,), origins)}``, rows in manifest order."""
    import csv

    import numpy as np
    import torch

    root = Path(embeddings_root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise PathfmError(f"{root}: no manifest.csv (not an eva embeddings folder, or eva's predict step failed)")
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, tuple] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split]
        x = np.stack([_one_tensor(torch.load(root / r["embeddings"], map_location="cpu")).reshape(-1).float().numpy()
                      for r in part])
        out[split] = (x, np.array([int(r["target"]) for r in part], np.int64), [r["origin"] for r in part])
    return out


def _one_tensor(loaded):
    """eva stores each embedding as a one-element list (its multi-embedding layout) or a tensor."""
    if isinstance(loaded, list):
        if len(loaded) != 1:
            raise PathfmError(f"expected one embedding per file, found {len(loaded)}")
        return loaded[0]
    return loaded
