"""Rebuild a sweep's tidy ``results.parquet`` from its trial folders (no Ray needed).

Collection reads only what each trial wrote next to its checkpoints (``trial.json``,
``metrics.jsonl``, ``eval.parquet``; the folders and their names: :mod:`pathfm.records`), so it can run at any
time: while the sweep runs, after the driver died, or on a copy of the folder. It is idempotent (same folders -> same table, rows sorted)
and atomic (written to a temporary file and renamed), so concurrent collectors never leave a
corrupt file: the last rename wins and each candidate is complete.

Schema (:mod:`pathfm.results`, docs/architecture.md "Tidy result rows"): one row per (trial, step-or-final,
metric) with ``sweep, trial_id, arm, status, seed, kind, step, final, task, probe, backbone, fold, metric,
value, wall_time_s, gpu_hours, tiles_seen, trial_dir, stop_reason`` plus ``param.<name>`` per searched
parameter and varying arm label.
The sweep's reference rows (the baselines evaluated once per sweep, ``<sweep_dir>/reference/``, see
:mod:`pathfm.sweeps.reference`) join them with ``trial_id = "reference"``, ``arm``/``seed`` null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathfm.errors import PathfmError
from pathfm.infra.folder_mirror import FolderMirror, upload_file
from pathfm.infra.object_store import open_storage, staging_dir
from pathfm.infra.sweep_sync import gather_trials
from pathfm.io import read_jsonl, write_parquet
from pathfm.records import RunFolder, SweepFolder, TrialRecord
from pathfm.records.sweep_folder import RESULTS_FILE, TRIAL_PREFIX
from pathfm.results import REFERENCE_TRIAL_ID, param_column, sweep_frame

if TYPE_CHECKING:
    import polars as pl

_NON_METRIC_KEYS = {"step", "stage", "time_s", "tiles_seen"}


def train_records(trial_dir: Path) -> list[dict]:
    """metrics.jsonl deduplicated by step (a resumed run re-logs steps after its checkpoint; last wins)."""
    by_step: dict[int, dict] = {}
    for rec in read_jsonl(RunFolder(trial_dir).metrics):
        if isinstance(rec.get("step"), int):
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def trial_rows(trial_dir: Path, sweep: str, param_names: list[str], info: TrialRecord | None = None) -> list[dict]:
    """Tidy rows of one trial folder (train metrics per logged step, eval rows, the objective);
    ``info``: its record if the caller has read it already."""
    info = info if info is not None else TrialRecord.read(trial_dir)
    if info is None or info == TrialRecord():  # never started, or its trial.json is unreadable
        return []
    gpus = float(info.gpus or 0.0)
    params = info.params or {}
    common = {
        "sweep": sweep, "trial_id": str(info.trial_id), "arm": info.arm,
        "status": info.status, "seed": info.seed, "trial_dir": Path(trial_dir).name,
        "stop_reason": info.stop_reason,  # a guard's reason (collapsed / diverged / probe_dropped)
    }
    common.update({param_column(k): params.get(k) for k in param_names})
    rows: list[dict] = []
    records = train_records(trial_dir)
    for i, rec in enumerate(records):
        t = _num(rec.get("time_s"))
        base = dict(common, kind="train", step=rec["step"], final=i == len(records) - 1, task=None, probe=None,
                    backbone=None, fold=None, wall_time_s=t, gpu_hours=(t or 0.0) * gpus / 3600.0,
                    tiles_seen=rec.get("tiles_seen"))
        for k, v in rec.items():
            x = _num(v)
            if k in _NON_METRIC_KEYS or x is None:
                continue
            rows.append(dict(base, metric=k, value=x))
    wall = _num(info.wall_time_s)
    totals = dict(common, kind="eval", final=True, wall_time_s=wall, gpu_hours=_num(info.gpu_hours),
                  tiles_seen=info.tiles_seen)
    eval_path = RunFolder(trial_dir).eval
    if eval_path.exists():
        import polars as pl

        try:
            ev = pl.read_parquet(eval_path)
        except Exception:  # a half-copied file from elsewhere; atomic writers never leave one
            ev = None
        if ev is not None:
            for r in ev.iter_rows(named=True):
                rows.append(dict(totals, step=r.get("step"), task=r.get("task"), probe=r.get("probe"),
                                 backbone=r.get("backbone"), fold=r.get("fold"), metric=r.get("metric"),
                                 value=_num(r.get("value")), probe_seed=r.get("probe_seed")))
    for metric, value in sorted((info.objective or {}).items()):
        if _num(value) is not None:
            rows.append(dict(totals, step=info.final_step, task=None, probe=None, backbone=None, fold=None,
                             metric=metric, value=float(value)))
    return rows


def reference_rows(sweep_dir: Path, sweep: str) -> list[dict]:
    """The sweep-level reference rows (``random_init`` / ``color_histogram`` eval rows, evaluated once per
    sweep): ``trial_id = trial_dir = "reference"``, ``arm`` and params null, ``seed`` the random init's init
    seed (null for the colour histogram), ``final`` true."""
    folder = SweepFolder(sweep_dir)
    path = folder.reference_eval
    if not path.exists():
        return []
    import polars as pl

    try:
        ev = pl.read_parquet(path)
    except Exception:  # a half-copied file from elsewhere; atomic writers never leave one
        return []
    info = folder.read_reference()
    common = dict(sweep=sweep, trial_id=REFERENCE_TRIAL_ID, arm=None, status="TERMINATED", kind="eval",
                  final=True, wall_time_s=_num(info.get("wall_time_s")), gpu_hours=_num(info.get("gpu_hours")),
                  tiles_seen=None, trial_dir=folder.reference_dir.name)
    return [dict(common, seed=r.get("init_seed"), step=r.get("step"), task=r.get("task"), probe=r.get("probe"), backbone=r.get("backbone"),
                 fold=r.get("fold"), metric=r.get("metric"), value=_num(r.get("value")),
                 probe_seed=r.get("probe_seed"))
            for r in ev.iter_rows(named=True)]


def results_frame(sweep_dir: Path):
    """The tidy results of a sweep as a polars DataFrame (rebuilt from the trial folders)."""
    sweep_dir = Path(sweep_dir)
    folder = SweepFolder(sweep_dir)
    meta = folder.read_meta()
    sweep = meta.get("sweep") or sweep_dir.name
    param_names = list(meta.get("params") or [])
    trials = folder.trials()
    if not param_names:  # a folder without metadata: take the params the trials recorded
        for _, info in trials:
            for k in info.params or {}:
                if k not in param_names:
                    param_names.append(k)
    rows: list[dict] = []
    for d, info in trials:
        rows.extend(trial_rows(d, sweep, param_names, info))
    rows.extend(reference_rows(sweep_dir, sweep))
    df = sweep_frame(rows, param_names)
    return df.sort(["trial_dir", "kind", "step", "metric", "task", "probe", "backbone", "fold"],
                   nulls_last=True, maintain_order=True)


def collect(sweep_dir: str | Path) -> Path:
    """(Re)write ``sweep_dir/results.parquet`` from the trial folders; idempotent and atomic."""
    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise PathfmError(f"sweep folder '{sweep_dir}' does not exist")
    df = with_arm_label_columns(results_frame(sweep_dir), {"arms": arm_label_records(sweep_dir)})
    return write_parquet(df, SweepFolder(sweep_dir).results, "sweep results")  # a full disk: a clear error, old file kept


def arm_label_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """``[{"name": arm, "labels": {...}}]`` of a sweep's arms: from ``sweep_meta.json`` (``arm_labels``,
    recorded at launch), else from the trials' ``trial.json``, else (sweeps started before arms carried
    labels) from ``study_plan.json``."""
    folder = SweepFolder(sweep_dir)
    by_arm = folder.read_meta().get("arm_labels")
    if not by_arm:
        by_arm = {info.arm: info.arm_labels for _, info in folder.trials() if info.arm is not None and info.arm_labels}
    if by_arm:
        return [{"name": name, "labels": labels} for name, labels in by_arm.items()]
    return list((folder.read_study_plan() or {}).get("arms") or [])  # older sweeps


def label_columns(plan: dict) -> dict[str, dict[str, Any]]:
    """``{label: {arm name: value}}`` for every scalar arm label (``plan["arms"]``: ``[{"name", "labels"}]``,
    as :func:`arm_label_records` gives or a study plan holds) that varies across arms (an ablation's arms carry
    labels such as ``n_slides`` or ``kde``; they become ``param.<label>``)."""
    per_label: dict[str, dict[str, Any]] = {}
    for arm in plan.get("arms", []):
        for k, v in (arm.get("labels") or {}).items():
            if isinstance(v, (bool, int, float, str)) or v is None:
                per_label.setdefault(k, {})[arm["name"]] = v
    return {k: m for k, m in per_label.items() if len({json.dumps(v) for v in m.values()}) > 1}


def with_arm_label_columns(df: pl.DataFrame, plan: dict) -> pl.DataFrame:
    """Add a ``param.<label>`` column per varying arm label; searched params of the same name win."""
    import polars as pl

    added = []
    for label, by_arm in label_columns(plan).items():
        col = f"param.{label}"
        if col in df.columns or "arm" not in df.columns:
            continue
        values = list(by_arm.values())
        if all(isinstance(v, bool) for v in values):
            dtype: Any = pl.Boolean
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            dtype = pl.Int64
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dtype, by_arm = pl.Float64, {a: float(v) for a, v in by_arm.items()}
        else:
            dtype, by_arm = pl.String, {a: None if v is None else str(v) for a, v in by_arm.items()}
        added.append(pl.col("arm").replace_strict(by_arm, default=None, return_dtype=dtype).alias(col))
    return df.with_columns(added) if added else df


def summarize(sweep_dir: str | Path) -> list[dict]:
    """One dict per trial for ``pathfm sweep status``: id, arm, seed, params, status, step, objective."""
    out = []
    for d, info in SweepFolder(sweep_dir).trials():
        recs = train_records(d)
        out.append({
            "trial_id": info.trial_id, "index": info.index, "arm": info.arm, "seed": info.seed,
            "params": info.params or {}, "status": info.status, "step": recs[-1]["step"] if recs else 0,
            "total_steps": info.total_steps, "objective": info.objective or {}, "error": info.error,
            "wall_time_s": info.wall_time_s, "attempts": info.attempts, "dir": d.name, "stop_reason": info.stop_reason,
        })
    return out


def collect_from_store(uri: str, filesystem: Any = None) -> str:
    """``pathfm sweep collect URI`` (an object-store sweep, :mod:`pathfm.infra.sweep_sync`): fetch the sweep folder at ``uri`` into its staging folder (trial folders
    without their checkpoints), rebuild ``results.parquet`` from its trial folders, write it back to ``uri``;
    returns the URI of the results file."""
    import pyarrow.fs as pafs

    store = open_storage(uri, filesystem)
    info = store.filesystem.get_file_info(store.root)
    if info.type != pafs.FileType.Directory:
        raise PathfmError(f"{store.uri}: no sweep folder there ({info.type.name.lower()})")
    local = staging_dir(store)
    FolderMirror(local, store).pull(skip_prefixes=(TRIAL_PREFIX,))
    gather_trials(local, store)
    out = collect(local)
    try:
        upload_file(out, store.filesystem, store.child(RESULTS_FILE).root)
    except OSError as e:
        raise PathfmError(f"writing {RESULTS_FILE} to {store.uri} failed: {e}") from None
    return store.child(RESULTS_FILE).uri
