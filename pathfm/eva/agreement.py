"""eva's numbers beside pathfm's on the same tiles and the same embeddings.

After eva's ``predict_fit`` on ``pathfm:<task>`` (fold ``fold`` of pathfm's folds), this reads the embeddings
eva wrote, checks them against pathfm's own feature extractor on the same tiles (largest absolute
difference), and runs pathfm's probes on eva's embeddings of the same train/validation split, so the two
linear probes are compared on identical features. The protocols differ on purpose and the numbers with them:
eva trains a linear head with SGD + cosine schedule and keeps the checkpoint with the best *validation*
accuracy (the validation split is also the one reported), pathfm's ``linear`` probe chooses L2 strength by
an inner cross-validation on the training split only and never sees the held-out tiles before scoring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathfm.errors import PathfmError
from pathfm.eva.results import eva_rows, read_eva_embeddings


def compare_with_pathfm(out_dir: str | Path, results_json: str | Path, *, source: str, task: str, fold: int = 0,
                        seed: int = 0, pooling: str = "cls+mean", random_init_seed: int | None = None,
                        probes=("linear", "torch_linear")) -> dict:
    """``{"feature_max_abs_diff", "eva_balanced_accuracy" (mean over eva's runs), "eva_runs",
    "pathfm_<probe>_balanced_accuracy", "n_train", "n_val"}`` for an eva run written to ``out_dir`` by
    :func:`pathfm.eva.config.eva_config` on ``pathfm:<task>``."""
    from pathfm.eval.features import extract_features
    from pathfm.eval.metrics import classification_metrics
    from pathfm.eval.probes import run_probe
    from pathfm.eval.sources import load_source
    from pathfm.eval.tasks import get_task
    from pathfm.eval.tiles import load_samples
    from pathfm.eva.tile_dataset import fold_indices

    t = get_task(task)
    emb = read_eva_embeddings(Path(out_dir) / "embeddings")
    (x_tr, y_tr, _), (x_va, y_va, _) = emb["train"], emb["val"]
    tr_idx, va_idx = fold_indices(t, "train", fold, seed), fold_indices(t, "val", fold, seed)
    if not (np.array_equal(y_tr, t.labels[tr_idx]) and np.array_equal(y_va, t.labels[va_idx])):
        raise PathfmError(f"{out_dir}: eva's embeddings are not fold {fold} (seed {seed}) of task '{task}'")
    bb = load_source(source)
    if random_init_seed is not None:
        bb = bb.random_init(random_init_seed)
    images = load_samples(t).images
    ours = extract_features(bb.model, images[np.concatenate([tr_idx, va_idx])], mean=bb.mean, std=bb.std,
                            pooling=pooling, device="cpu")
    out = {"feature_max_abs_diff": float(np.abs(ours - np.concatenate([x_tr, x_va])).max()),
           "n_train": len(y_tr), "n_val": len(y_va)}
    ev = [r["value"] for r in eva_rows(results_json, source=source, backbone="b", task=task)
          if r["metric"] == "balanced_accuracy" and r["task"] == f"eva:{task}"]
    out["eva_runs"] = ev
    out["eva_balanced_accuracy"] = float(np.mean(ev))
    for probe in probes:
        pred = run_probe(probe, x_tr, y_tr, x_va, n_classes=t.n_classes, seed=seed).y_pred
        out[f"pathfm_{probe}_balanced_accuracy"] = classification_metrics(y_va, pred, t.n_classes)["balanced_accuracy"]
    return out
