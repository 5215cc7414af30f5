"""``fast_probe``: the in-training probe (configured by ``cfg.probe``; what a sweep scheduler reports and prunes on);
``probe_teacher`` is the form training takes it in: ``train(cfg, run_dir, probe=probe_teacher)``.

Runs inside training every N steps on small tasks whose decoded tiles are cached in memory, so a call
costs one no-grad forward pass over the tiles plus a kNN (milliseconds) or a logistic regression. No
baselines, no disk writes. The module's training flag and device are left as they were.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pathfm.backbone.embedding_stats import embedding_diagnostics
from pathfm.eval.features import extract_features
from pathfm.eval.metrics import METRICS, classification_metrics
from pathfm.eval.probes import check_probes, run_probe
from pathfm.eval.tasks import get_task
from pathfm.eval.tiles import load_samples


def fast_probe(backbone, tasks: str | Sequence[str] = ("crc",), probe: str = "knn", *, seed: int = 0,
               n_folds: int | None = None, pooling: str = "cls+mean", resize: int | None = None,
               batch_size: int = 64, mean: float = 0.5, std: float = 0.5, diagnostics: bool = True) -> dict[str, float]:
    """``{"probe/<task>/<metric>": mean over folds}`` for balanced_accuracy, accuracy, macro_f1, plus
    ``probe/<task>/rankme`` and ``probe/<task>/uniformity`` (label-free) when ``diagnostics``.

    ``backbone``: a module with ``forward_features -> {"cls", "patch"}`` (the teacher backbone, on any
    device), or anything :func:`pathfm.eval.sources.load_source` accepts. ``mean``/``std``: the
    training normalisation (``cfg.data.normalize_*``) for a bare module.
    """
    (probe,) = check_probes(probe)
    model, m, s = backbone, (mean,) * 3, (std,) * 3
    if isinstance(backbone, str) or not hasattr(backbone, "forward_features"):
        from pathfm.eval.sources import load_source

        bb = load_source(backbone)
        model, m, s = bb.model, bb.mean, bb.std
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    loaded = [load_samples(get_task(t, n_folds=n_folds)) for t in names]
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else "cpu"
    out: dict[str, float] = {}
    for smp in loaded:
        x = extract_features(model, smp.images, mean=m, std=s, pooling=pooling, resize=resize,
                             batch_size=batch_size, device=device)
        groups = smp.sample_groups()
        per_fold = {k: [] for k in METRICS}
        for tr, te in smp.folds(seed):
            res = run_probe(probe, x[tr], smp.labels[tr], x[te], n_classes=smp.task.n_classes, groups=groups[tr],
                            seed=seed)
            for k, v in classification_metrics(smp.labels[te], res.y_pred, smp.task.n_classes).items():
                per_fold[k].append(v)
        for k, v in per_fold.items():
            out[f"probe/{smp.task.name}/{k}"] = float(np.mean(v))
        if diagnostics:
            for k, v in embedding_diagnostics(x).items():
                out[f"probe/{smp.task.name}/{k}"] = v
    return out


def probe_teacher(backbone, probe_cfg) -> dict[str, float]:
    """The in-training probe as :func:`pathfm.ssl.trainer.train` calls it: :func:`fast_probe` of the teacher
    ``backbone`` on ``probe_cfg.tasks`` with ``probe_cfg.probe`` (``cfg.probe``); the trainer puts the backbone
    in eval mode around the call."""
    return fast_probe(backbone, tasks=probe_cfg.tasks, probe=probe_cfg.probe)
