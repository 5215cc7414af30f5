"""Run a study plan with the sweep harness and record the study next to the results.

``pathfm ablate run`` = :func:`run_plan`:

1. ``sweep_dir/study_plan.json``: every arm's overrides and labels (knob values, design coding, ladder
   variant), the aliases of deduplicated arms, comparisons and the study's analysis hints;
2. :func:`pathfm.sweeps.runner.run_sweep` runs arms x seeds (``sweep_spec.yaml``, ``sweep_meta.json``,
   trial folders, ``results.parquet``);
3. studies with ``eval_resolutions`` evaluate every finished trial again at those input sizes; the rows
   land in the trial's ``eval.parquet`` with the task named ``<task>@<px>px``;
4. ``results.parquet`` is rebuilt and gains one ``param.<label>`` column per arm label that varies
   (``param.n_slides``, ``param.hed_strength``, ...), so the analysis can plot against the knob (the labels
   travel with the sweep spec's arms into ``sweep_meta.json`` and every ``trial.json``).
   :func:`collect_study` redoes steps 3-4 at any time (``pathfm ablate collect DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pathfm.ablations.expand import StudyPlan
from pathfm.ablations.study import StudyError
from pathfm.records import RunFolder, SweepFolder
from pathfm.sweeps.collect import collect
from pathfm.sweeps.runner import SweepError, run_sweep, storage_root


def sweep_dir_for(plan: StudyPlan, storage: str | Path, name: str | None = None) -> Path:
    try:
        return storage_root(storage) / (name or plan.sweep_name())
    except SweepError as e:
        raise StudyError(str(e)) from None


def run_plan(
    plan: StudyPlan,
    storage: str | Path = "runs/sweeps",
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    name: str | None = None,
    verbose: int = 1,
) -> Path:
    """Run every arm x seed of ``plan`` through :func:`pathfm.sweeps.runner.run_sweep`; returns the sweep dir."""
    spec = plan.to_sweep_spec()
    if name:
        spec.name = name
    sweep_dir = sweep_dir_for(plan, storage, spec.name)
    if SweepFolder(sweep_dir).spec.exists():
        raise StudyError(
            f"{sweep_dir} already holds this study's sweep; continue it with `pathfm sweep resume {sweep_dir}` "
            f"(then `pathfm ablate collect {sweep_dir}`), or start another with --name or --storage"
        )
    write_plan(plan, sweep_dir)
    out = Path(run_sweep(spec, sweep_dir.parent, address=address, num_cpus=num_cpus, verbose=verbose))
    collect_study(out, plan)
    return out


def write_plan(plan: StudyPlan, sweep_dir: Path) -> Path:
    return SweepFolder(sweep_dir).write_study_plan(plan.to_dict())


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    path = SweepFolder(sweep_dir).study_plan
    if not path.exists():
        raise StudyError(f"{sweep_dir} has no {path.name}: it was not started by `pathfm ablate run`")
    return json.loads(path.read_text())


def collect_study(sweep_dir: Path, plan: StudyPlan | dict | None = None) -> Path:
    """Extra-resolution evaluations (if the study asks), then results.parquet with arm-label columns."""
    sweep_dir = Path(sweep_dir)
    info = plan.to_dict() if isinstance(plan, StudyPlan) else (plan or read_plan(sweep_dir))
    if info.get("eval_resolutions"):
        evaluate_resolutions(sweep_dir, info)
    return collect(sweep_dir)  # adds the arms' label columns (param.<label>) from the labels recorded at launch


# ------------------------------------------------------------------------------ resolutions
def resolution_px(cfg: Any, which: str) -> int:
    """``train``: the main stage's global crop; ``highres``: the high-resolution stage's global crop."""
    if which == "train":
        return int(cfg.data.crops.global_size)
    if which == "highres":
        return int(cfg.highres.global_size)
    raise StudyError(f"eval_resolutions: '{which}' is not 'train' or 'highres'")


def evaluate_resolutions(sweep_dir: Path, info: dict[str, Any]) -> None:
    """Evaluate every finished trial at each of ``info['eval_resolutions']`` (idempotent: a resolution
    whose rows are already in the trial's eval.parquet for its final step is skipped)."""
    import polars as pl

    from pathfm.config import config_from_dict, read_yaml
    from pathfm.eval import evaluate
    from pathfm.results import append_results

    ev = info.get("eval") or {}
    tasks = list(ev.get("tasks") or ["crc"])
    probes = list(ev.get("probes") or ["linear"])
    device = "cpu" if float((info.get("resources") or {}).get("gpu", 0)) <= 0 else "auto"
    for trial_dir, trial in SweepFolder(sweep_dir).trials():
        run = RunFolder(trial_dir)
        if trial.status != "TERMINATED" or not run.config.exists():
            continue
        cfg = config_from_dict(read_yaml(run.config), source=str(run.config))
        eval_path = run.eval
        have: set[str] = set()
        if eval_path.exists():
            old = pl.read_parquet(eval_path)
            have = set(old.filter(pl.col("step") == trial.final_step)["task"].unique().to_list())
        for which in info["eval_resolutions"]:
            px = resolution_px(cfg, which)
            names = {t: f"{t}@{px}px" for t in tasks}
            if set(names.values()) <= have:
                continue
            df = evaluate(str(trial_dir), tasks=tasks, probes=probes, baselines=False, resize=px, output=None,
                          progress=False, verbose=False, device=device)
            df = df.with_columns(pl.col("task").replace(names))
            append_results(eval_path, df)
            have |= set(names.values())

