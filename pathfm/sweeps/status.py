"""What a sweep looks like from its folder, without Ray: one summary line per trial (printed as trials end)
and the status table of ``pathfm sweep status``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathfm.records import SweepFolder, TrialRecord
from pathfm.sweeps.collect import summarize


def format_value(v: Any) -> str:
    """A parameter value for a status line (floats to 4 significant digits)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trial_summary_line(sweep: str, info: TrialRecord | dict) -> str:
    """``[sweep] trial 0a1b2_00003 TERMINATED  arm=+kde seed=0 kde_weight=0.1  step 10/10  eval/...=0.61  42.0s``
    (``info``: the trial's record, or trial.json's content)."""
    t = info if isinstance(info, TrialRecord) else TrialRecord.from_dict(info)
    reason = f" ({t.stop_reason})" if t.stop_reason else ""
    parts = [f"[{sweep}] trial {t.trial_id} {t.status}{reason}"]
    desc = []
    if t.arm is not None:
        desc.append(f"arm={t.arm}")
    if t.seed is not None:
        desc.append(f"seed={t.seed}")
    desc += [f"{k}={format_value(v)}" for k, v in (t.params or {}).items()]
    parts.append(" ".join(desc) or "-")
    if t.final_step is not None:
        parts.append(f"step {t.final_step}/{t.total_steps}")
    obj = t.objective or {}
    if obj:
        key = "eval/mean_balanced_accuracy" if "eval/mean_balanced_accuracy" in obj else sorted(obj)[0]
        parts.append(f"{key}={obj[key]:.4f}")
    if t.wall_time_s is not None:
        parts.append(f"{t.wall_time_s:.1f}s")
    if t.hangs:  # run.hang_timeout_s killed it (pathfm/infra/hang.py)
        parts.append(f"hung {t.hangs}x (killed and retried)")
    if t.status == "ERROR" and t.error:
        parts.append(f"error: {str(t.error).splitlines()[0][:200]}")
    return "  ".join(parts)


def format_status(sweep_dir: str | Path) -> str:
    """A plain-text table of the trials of a sweep (no Ray needed)."""
    rows = summarize(Path(sweep_dir))
    if not rows:
        return f"{sweep_dir}: no trial has started yet"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    meta = SweepFolder(sweep_dir).read_meta()
    total = meta.get("n_trials")
    head = f"sweep {meta.get('sweep', Path(sweep_dir).name)}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if total:
        head += f" ({len(rows)} of {total} started)"
    obj_key = (meta.get("objective") or {}).get("metric", "eval/mean_balanced_accuracy")
    arm_w = max([12] + [len(str(r["arm"] or "-")) for r in rows])  # the columns stay aligned for long arm names
    lines = [head, f"{'trial':<14} {'status':<20} {'arm':<{arm_w}} {'seed':>4} {'step':>9}  {obj_key:<28} params"]
    for r in rows:
        obj = r["objective"].get(obj_key)
        params = " ".join(f"{k}={format_value(v)}" for k, v in r["params"].items())
        step = f"{r['step']}/{r['total_steps'] or '?'}"
        status = f"{r['status']} ({r['stop_reason']})" if r.get("stop_reason") else str(r["status"])
        lines.append(f"{str(r['trial_id']):<14} {status:<20} {str(r['arm'] or '-'):<{arm_w}} "
                     f"{str(r['seed'] if r['seed'] is not None else '-'):>4} {step:>9}  "
                     f"{(f'{obj:.4f}' if isinstance(obj, float) else '-'):<28} {params}")
        if r["status"] == "ERROR" and r["error"]:
            lines.append(f"{'':<14} error: {str(r['error']).splitlines()[0][:160]}")
    ref = SweepFolder(sweep_dir).read_reference()
    if ref.get("status"):
        how = f"arm {ref.get('arm')}" + (f", {ref['wall_time_s']:.1f}s" if isinstance(ref.get("wall_time_s"), float) else "")
        err = f": {str(ref['error']).splitlines()[0][:160]}" if ref.get("error") else ""
        lines.append(f"reference rows (random init, colour histogram; once per sweep): {ref['status']} ({how}){err}")
    return "\n".join(lines)
