"""Named ablation studies of the Midnight recipe, expanded into sweeps.

    from pathfm.ablations import plan_for
    plan = plan_for("component", "smoke", seeds=2)     # StudyPlan: arms (deduplicated), seeds, baseline, comparisons
    spec = plan.to_sweep_spec()                        # pathfm.sweeps.spec.SweepSpec
    from pathfm.ablations.run import run_plan
    sweep_dir = run_plan(plan, "runs/sweeps")          # -> results.parquet + study_plan.json

Studies are YAML files in ``pathfm/ablations/studies/`` (see ``pathfm/ablations/README.md``). Names are
imported lazily so that ``pathfm --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArmPlan": "pathfm.ablations.expand",
    "StudyPlan": "pathfm.ablations.expand",
    "expand_study": "pathfm.ablations.expand",
    "plan_for": "pathfm.ablations.expand",
    "Study": "pathfm.ablations.study",
    "StudyError": "pathfm.ablations.study",
    "bundled_studies": "pathfm.ablations.study",
    "load_study": "pathfm.ablations.study",
    "run_plan": "pathfm.ablations.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pathfm.ablations' has no attribute {name!r}")
