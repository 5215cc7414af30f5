"""Frozen-feature downstream evaluation: tasks, feature extraction, probes, metrics, baselines, hook.

Public API (imported lazily so ``pathfm --help`` stays instant)::

    from pathfm.eval import evaluate, fast_probe, TASKS
    df = evaluate("runs/smoke", tasks=["crc", "osteo"], probes=("linear", "knn"))
    fast_probe(model, tasks=["crc"], probe="knn")   # {"probe/crc/balanced_accuracy": ..., ...}
"""

from __future__ import annotations

from pathfm._lazy import lazy_exports

_EXPORTS = {
    "evaluate": "pathfm.eval.evaluation",
    "fast_probe": "pathfm.eval.hook",
    "TASKS": "pathfm.eval.tasks",
    "TaskSpec": "pathfm.eval.tasks",
    "Task": "pathfm.eval.tasks",
    "TaskError": "pathfm.eval.tasks",
    "get_task": "pathfm.eval.tasks",
    "known_tasks": "pathfm.eval.tasks",
    "load_source": "pathfm.eval.sources",
    "Backbone": "pathfm.eval.backbones",
    "CheckpointError": "pathfm.eval.backbones",
    "extract_features": "pathfm.eval.features",
    "headline_metrics": "pathfm.eval.results",
    "summary_stats": "pathfm.eval.results",
    "append_results": "pathfm.results",
    "classification_metrics": "pathfm.eval.metrics",
    "rankme": "pathfm.eval.metrics",
    "uniformity": "pathfm.eval.metrics",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
