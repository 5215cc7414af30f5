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

from pathfm._lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
