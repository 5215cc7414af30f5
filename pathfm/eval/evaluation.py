"""``evaluate``: frozen features of a backbone on labelled tile tasks, probed fold by fold, beside the
honesty baselines (the same architecture randomly initialised, and colour histograms).

Order of work: every option, task and tile is validated (and decoded) before a model is loaded or run,
so bad input fails in seconds with a message naming the file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pathfm.errors import PathfmError
from pathfm.eval.backbones import RANDOM_INIT_SEED, Backbone
from pathfm.eval.sources import load_source
from pathfm.eval.features import (
    POOLINGS,
    FeatureCache,
    cache_key,
    color_histogram_features,
    default_cache_dir,
    extract_features,
)
from pathfm.backbone.embedding_stats import embedding_diagnostics
from pathfm.eval.metrics import classification_metrics
from pathfm.eval.probes import check_probes, run_probe
from pathfm.eval.results import format_summary
from pathfm.eval.tasks import get_task
from pathfm.eval.tiles import TaskSamples, load_samples
from pathfm.records import RunFolder, eval_diagnostics_beside
from pathfm.results import append_results, eval_frame

DEFAULT_TASKS = ("crc", "osteo")


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple, set, range)) else [x]


def backbone_features(backbone: Backbone, samples: TaskSamples, *, pooling: str, resize: int | None,
                      batch_size: int, device, cache: FeatureCache, progress: bool, label: str) -> np.ndarray:
    """Features of every sample of a task, from the disk cache when the same backbone/task/options ran."""
    key = cache_key(backbone.identity, samples.task.fingerprint, pooling=pooling, resize=resize,
                    size=samples.task.spec.input_size, crops=samples.task.spec.crops_per_side,
                    mean=list(backbone.mean), std=list(backbone.std))
    feats = cache.load(samples.task.name, key)
    if feats is not None and feats.shape[0] == len(samples):
        return feats
    feats = extract_features(backbone.model, samples.images, mean=backbone.mean, std=backbone.std, pooling=pooling,
                             resize=resize, batch_size=batch_size, device=device, progress=progress,
                             desc=f"{label} {samples.task.name}")
    cache.save(samples.task.name, key, feats)
    return feats


def task_label(name: str, *, resize: int | None = None, pooling: str = "cls+mean") -> str:
    """The ``task`` value of the rows: the task name, tagged with non-default options (``crc@392px``,
    ``crc[cls]``), so evaluations of one checkpoint at two resolutions never overwrite each other."""
    return name + (f"@{resize}px" if resize else "") + ("" if pooling == "cls+mean" else f"[{pooling}]")


def probe_rows(feats: dict[str, np.ndarray], samples: TaskSamples, probes: Sequence[str], seeds: Sequence[int], *,
               source: str, step: int, task: str | None = None,
               backbones: dict[str, tuple[str, int | None]] | None = None) -> list[dict]:
    """One tidy row per (backbone kind, probe, fold, metric). ``backbones`` maps a key of ``feats`` to its
    ``(backbone, init_seed)`` (default: the key itself, no init seed)."""
    backbones = backbones or {}
    rows = []
    groups = samples.sample_groups()
    n_classes = samples.task.n_classes
    for si, seed in enumerate(seeds):
        folds = samples.folds(seed)
        for fi, (tr, te) in enumerate(folds):
            for probe in probes:
                for key, x in feats.items():
                    kind, init_seed = backbones.get(key, (key, None))
                    res = run_probe(probe, x[tr], samples.labels[tr], x[te], n_classes=n_classes, groups=groups[tr],
                                    seed=seed)
                    for metric, value in classification_metrics(samples.labels[te], res.y_pred, n_classes).items():
                        rows.append(dict(source=source, backbone=kind, task=task or samples.task.name, probe=probe,
                                         fold=si * len(folds) + fi, metric=metric, value=value, step=step,
                                         n_train=len(tr), n_test=len(te), probe_seed=seed, init_seed=init_seed))
    return rows


def evaluate(source, tasks: str | Sequence = DEFAULT_TASKS, probes: str | Sequence[str] = ("linear", "knn"),
             seeds: int | Sequence[int] = (0,), *, baselines: bool = True, trained: bool = True,
             random_init_seeds: Sequence[int] = (RANDOM_INIT_SEED,), pooling: str = "cls+mean",
             resize: int | str | None = None, n_folds: int | None = None, batch_size: int = 64,
             device: str | None = "auto", cache_dir: str | Path | None = "auto", output: str | Path | None = "auto",
             progress: bool = True, verbose: bool = True):
    """Evaluate ``source`` (run dir, exported backbone / checkpoint, ``timm:<name>``, or a module) on tasks.

    Returns a polars DataFrame of tidy rows (schema in :mod:`pathfm.results`; the ``task`` column is
    tagged with non-default options, e.g. ``crc@392px``, see :func:`task_label`); with ``output="auto"``
    they are appended to ``<run_dir>/eval.parquet`` when the source belongs to a run (a path: that file;
    None: not written). ``resize="model"`` evaluates at the backbone's training resolution.
    Baselines (``baselines=True``): the same probes on a random init of the same architecture and on
    colour-histogram features, reported beside the trained backbone; the random init at each of
    ``random_init_seeds`` (rows ``backbone = "random_init"``, column ``init_seed``). ``trained=False``
    evaluates the baselines alone (a sweep's reference rows, :func:`reference_backbone`).
    """
    t0 = time.perf_counter()
    probes = check_probes(probes)
    seeds = [int(s) for s in _as_list(seeds)]
    if not seeds:
        raise PathfmError("seeds is empty; give at least one (e.g. 0)")
    if pooling not in POOLINGS:
        raise PathfmError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    if batch_size < 1:
        raise PathfmError(f"batch_size must be >= 1, got {batch_size}")
    if not trained and not baselines:
        raise PathfmError("nothing to evaluate: trained=False and baselines=False")
    task_objs = [get_task(t, n_folds=n_folds) for t in _as_list(tasks)]
    if not task_objs:
        raise PathfmError("no tasks given")
    samples = [load_samples(t, progress=progress) for t in task_objs]  # unreadable tiles fail here, early
    backbone = load_source(source)
    if resize == "model":
        if not backbone.native_size:
            raise PathfmError(f"{backbone.source}: its training resolution is unknown; give --resize PIXELS")
        resize = int(backbone.native_size)
    elif resize is not None:
        resize = int(resize)
    cache = FeatureCache(default_cache_dir(backbone.run_dir) if cache_dir == "auto" else cache_dir)
    kinds: dict[str, Backbone | None] = {"trained": backbone} if trained else {}
    names: dict[str, tuple[str, int | None]] = {}
    if baselines:
        for init_seed in dict.fromkeys(int(s) for s in random_init_seeds):
            key = "random_init" if init_seed == RANDOM_INIT_SEED else f"random_init:{init_seed}"
            kinds[key], names[key] = backbone.random_init(init_seed), ("random_init", init_seed)
        kinds["color_histogram"] = None
    rows: list[dict] = []
    diagnostics: list[dict] = []
    for smp in samples:
        label = task_label(smp.task.name, resize=resize, pooling=pooling)
        feats: dict[str, np.ndarray] = {}
        for kind, bb in kinds.items():
            if bb is None:
                feats[kind] = color_histogram_features(smp.images)
            else:
                feats[kind] = backbone_features(bb, smp, pooling=pooling, resize=resize, batch_size=batch_size,
                                                device=device, cache=cache, progress=progress, label=kind)
            diagnostics.append({"task": label, "backbone": names.get(kind, (kind,))[0], "dim": int(feats[kind].shape[1]),
                                **embedding_diagnostics(feats[kind])})
        rows += probe_rows(feats, smp, probes, seeds, source=str(backbone.source), step=backbone.step, task=label,
                           backbones=names)
    df = eval_frame(rows)
    out_path = _output_path(output, backbone)
    if out_path is not None:
        append_results(out_path, df)
        _write_diagnostics(eval_diagnostics_beside(out_path), diagnostics, backbone, pooling, resize)
    if verbose:
        where = f"; rows appended to {out_path}" if out_path else ""
        print(f"\npathfm eval: {backbone.source} (step {backbone.step}, {backbone.arch}, {pooling}"
              f"{f', resized to {resize}px' if resize else ''}) in {time.perf_counter() - t0:.1f}s{where}",
              file=sys.stdout)
        print(format_summary(df, diagnostics), file=sys.stdout)
    return df


def _output_path(output, backbone: Backbone) -> Path | None:
    if output is None:
        return None
    if output == "auto":
        return RunFolder(backbone.run_dir).eval if backbone.run_dir is not None else None
    return Path(output)


def _write_diagnostics(path: Path, diagnostics: list[dict], backbone: Backbone, pooling: str, resize) -> None:
    from pathfm.io import append_jsonl

    for d in diagnostics:
        append_jsonl(path, {"source": str(backbone.source), "step": backbone.step, "pooling": pooling,
                            "resize": resize, **d})
