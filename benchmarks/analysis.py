"""Benchmark: 100,000 tidy result rows -> ablation table, data-efficiency curve and parameter importance.

Baseline, measured in the same run: pandas doing the same aggregation (read Parquet, select eval /
trained / linear / balanced_accuracy rows, keep each trial's final step, mean over folds per
(arm, seed, task), then mean and std over seeds per (arm, task)) — what an eva-style "mean +- std"
table costs. Ours does that aggregation with polars (lazy) and then everything else: bootstrap CIs,
paired differences, IQM, the power-law fits with bootstrap bands, fANOVA with bootstrap error bars.

    .venv/bin/python benchmarks/analysis.py [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")


def _pandas_aggregation(path: Path):
    import pandas as pd

    df = pd.read_parquet(path)
    d = df[(df.kind == "eval") & (df.backbone == "trained") & (df.probe == "linear") & (df.metric == "balanced_accuracy")]
    d = d[d.status.isin(["TERMINATED", "STOPPED", "RUNNING"])]
    last = d.groupby(["trial_id", "task"]).step.transform("max")
    fin = d[d.final.fillna(False)].groupby(["trial_id", "task"]).step.transform("max")
    target = fin.reindex(d.index).fillna(last)
    d = d[d.step == target]
    d = d.assign(arm=d.arm + ", n_slides=" + d["param.n_slides"].astype(str))
    per_seed = d.groupby(["arm", "seed", "task"]).value.mean().reset_index()
    return per_seed.groupby(["arm", "task"]).value.agg(["mean", "std", "count"])


def _ours_aggregation(path: Path):
    from pathfm.analysis.load import Selection, fold_scores, trial_scores

    return trial_scores(fold_scores(path, Selection()))


def _ours_full(path: Path, out: Path) -> dict[str, float]:
    from pathfm.analysis.curve import data_efficiency
    from pathfm.analysis.importance import param_importance, searched_params
    from pathfm.analysis.load import Selection, scan_results, trial_values
    from pathfm.analysis.table import table_from_results

    t = {}
    w0, c0 = time.perf_counter(), time.process_time()
    table = table_from_results(path, Selection())
    table.to_markdown(), table.to_latex(), table.to_csv()
    w1, c1 = time.perf_counter(), time.process_time()
    data_efficiency(path, target=0.85)
    w2, c2 = time.perf_counter(), time.process_time()
    tv = trial_values(scan_results(path), Selection())
    param_importance(tv, searched_params(tv))
    w3, c3 = time.perf_counter(), time.process_time()
    t.update(table=(w1 - w0, c1 - c0), curve=(w2 - w1, c2 - c1), importance=(w3 - w2, c3 - c2), total=(w3 - w0, c3 - c0))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support, not in the package
    from synthetic_results import synthetic_results

    # 4 arms x 6 data sizes x 5 seeds = 120 trials; 5 tasks x 5 folds x 2 backbones per logged step
    steps = max(1, round(args.rows / (120 * (2 + 5 * 5 * 2))))
    df = synthetic_results(arms={"baseline": 0.0, "kde": 0.02, "no_hed": -0.01, "hsv_off": -0.02}, seeds=5,
                           tasks=("bach", "crc", "mhist", "pcam", "osteo"), folds=5,
                           steps=tuple(100 * (i + 1) for i in range(steps)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.parquet"
        df.write_parquet(path)
        _pandas_aggregation(path), _ours_aggregation(path), _ours_full(path, Path(tmp))  # warm imports/caches
        pd_t, pl_t, full = [], [], []
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            _pandas_aggregation(path)
            pd_t.append((time.perf_counter() - w, time.process_time() - c))
            w, c = time.perf_counter(), time.process_time()
            _ours_aggregation(path)
            pl_t.append((time.perf_counter() - w, time.process_time() - c))
            full.append(_ours_full(path, Path(tmp)))

    def med(xs, i):
        return statistics.median(x[i] for x in xs)

    print(f"rows: {df.height:,}  trials: {df['trial_id'].n_unique()}  repeats: {args.repeats} (median); "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'step':<52}{'wall s':>8}{'CPU s':>8}")
    rows = [("pandas: aggregation (mean/std per arm x task)", pd_t), ("pathfm (polars): same aggregation", pl_t)]
    for label, xs in rows:
        print(f"{label:<52}{med(xs, 0):>8.3f}{med(xs, 1):>8.3f}")
    print(f"{'  ratio pandas / pathfm':<52}{med(pd_t, 0) / med(pl_t, 0):>7.2f}x{med(pd_t, 1) / med(pl_t, 1):>7.2f}x")
    labels = {"table": "pathfm: table (2000 bootstraps, 24 arms x 5 tasks)", "curve": "pathfm: curve (4 arms, 200 refits + holdout)",
              "importance": "pathfm: importance (fANOVA, 20 bootstraps)", "total": "pathfm: table + curve + importance"}
    for k, label in labels.items():
        xs = [f[k] for f in full]
        print(f"{label:<52}{med(xs, 0):>8.3f}{med(xs, 1):>8.3f}")
    total = med([f["total"] for f in full], 0)
    print(f"target < 3 s (wall) for table + curve + importance: {'met' if total < 3.0 else 'NOT met'} ({total:.2f} s)")


if __name__ == "__main__":
    main()
