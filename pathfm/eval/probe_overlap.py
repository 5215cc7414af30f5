"""The in-training probe must not see the tiles the final evaluation tests on.

The in-training kNN/linear probe (``eval.every``/``eval.tasks`` of a training config, the signal ASHA prunes on,
the ``probe_dropped`` guard reads and a best-by-probe checkpoint is picked by) cross-validates over every tile
of its tasks. When those tiles include the final evaluation's test tiles, trials, checkpoints and stopping
points are selected on the test set, and the final scores are biased upwards. The final evaluation tests
every tile of a k-fold task (each lands in one test fold) and the ``test`` rows of a ``fixed`` task, so the
probe tasks must share none of those tiles (compared by resolved file path, so ``crc``, ``crc_crops`` and
``crc9`` overlap although their names differ).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from pathfm.errors import ConfigError
from pathfm.eval.tasks import get_task


@lru_cache(maxsize=64)
def _tile_sets(task_name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(every tile, the tiles the final evaluation tests on) of a task, as resolved paths."""
    task = get_task(task_name)
    paths = [str(p.resolve()) for p in task.paths]
    tested = paths if task.is_test is None else [p for p, t in zip(paths, task.is_test) if t]
    return frozenset(paths), frozenset(tested)


def probe_test_overlap(probe_tasks: Sequence[str], eval_tasks: Sequence[str]) -> list[tuple[str, str, int]]:
    """``(probe task, evaluation task, shared tiles)`` for every pair where the probe sees tested tiles."""
    out = []
    for p in probe_tasks:
        seen, _ = _tile_sets(str(p))
        for e in eval_tasks:
            n = len(seen & _tile_sets(str(e))[1])
            if n:
                out.append((str(p), str(e), n))
    return out


def check_probe_disjoint(probe_tasks: Sequence[str], eval_tasks: Sequence[str], where: str = "") -> None:
    """ConfigError when the in-training probe tasks share tiles with the final evaluation's test tiles."""
    overlap = probe_test_overlap(probe_tasks, eval_tasks)
    if not overlap:
        return
    pairs = "; ".join(f"probe task '{p}' holds {n} tiles that '{e}' tests on" for p, e, n in overlap)
    raise ConfigError(
        f"{where + ': ' if where else ''}the in-training probe (probe.tasks of the training config: "
        f"{list(probe_tasks)}) sees the final evaluation's test tiles ({pairs}): trials, checkpoints and stopping "
        "points would be selected on the test set. Probe on a task disjoint from the final evaluation (e.g. "
        "probe.tasks: [osteo] with a final evaluation on crc, or your own task of held-out training tiles), or "
        "remove that task from the sweep's eval.tasks")
