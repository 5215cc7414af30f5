"""The README's main job (scripts/demo.sh) at its smallest size, end to end, as a user runs it, checked on
content: every arm is there once per seed, the sweep evaluated random init at its init seeds, every score is a
balanced accuracy in [0, 1], and every Δ each report's table prints (vs the baseline, the planned comparison,
and vs random init) is recomputed here from results.parquet."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STUDY, SCALE, SEEDS, STEPS = "photometric", "cpu", 2, 4  # PATHFM_DEMO_SIZE=tiny in scripts/demo.sh
PROBES = ("knn", "linear")  # one report per probe: report-knn, report-linear


def _plan():
    from pathfm.ablations.expand import plan_for

    return plan_for(STUDY, SCALE, seeds=SEEDS, overrides={"steps": STEPS})


def _scores(results: Path, probe: str, backbone: str = "trained") -> pl.DataFrame:
    """``arm, seed, task, value``: balanced accuracy at the final step, mean over folds, of the trained backbone
    (per arm and training seed) or of the reference rows' random init (per init seed) -- recomputed from the tidy
    rows, independently of pathfm.analysis."""
    df = pl.read_parquet(results).filter(
        (pl.col("kind") == "eval") & (pl.col("backbone") == backbone) & (pl.col("probe") == probe)
        & (pl.col("metric") == "balanced_accuracy"))
    if backbone == "trained":
        df = df.filter(pl.col("final") & (pl.col("trial_id") != "reference"))
    else:
        df = df.filter(pl.col("trial_id") == "reference")
    return df.group_by("arm", "seed", "task").agg(pl.col("value").mean())


def _with_average(scores: pl.DataFrame, column: str) -> pl.DataFrame:
    if column != "Average":
        return scores.filter(pl.col("task") == column)
    n_tasks = scores["task"].n_unique()
    return (scores.group_by("arm", "seed").agg(pl.col("value").mean(), pl.len().alias("n"))
            .filter(pl.col("n") == n_tasks).with_columns(pl.lit("Average").alias("task")))


def _paired_delta(scores: pl.DataFrame, arm: str, ref: str, column: str) -> float:
    """Mean over the seeds both arms have of (arm - ref) in ``column`` (a task, or Average over tasks)."""
    s = _with_average(scores, column)
    a = s.filter(pl.col("arm") == arm).select("seed", pl.col("value").alias("a"))
    r = s.filter(pl.col("arm") == ref).select("seed", pl.col("value").alias("r"))
    pairs = a.join(r, on="seed")
    assert pairs.height > 0, (arm, ref, column)
    return float((pairs["a"] - pairs["r"]).mean())


def _check_report(report_dir: Path, results: Path, probe: str, arms: set[str], baseline: str) -> None:
    table = pl.read_csv(report_dir / "table.csv", null_values="n/a", infer_schema_length=None)
    assert set(table.filter(pl.col("row_type") == "cell")["arm"]) == arms
    assert set(table.filter(pl.col("row_type") == "reference")["arm"]) == {"random_init", "color_histogram"}
    means = table.filter(pl.col("row_type") != "comparison")["mean"].drop_nulls()
    assert means.len() > 0 and means.is_between(0.0, 1.0).all()

    scores = _scores(results, probe)
    cells = table.filter((pl.col("row_type") != "reference") & pl.col("delta").is_not_null()
                         & (pl.col("column") != "IQM"))  # IQM is not a per-seed quantity
    for r in cells.iter_rows(named=True):
        ref = r["baseline"] if r["row_type"] == "comparison" else baseline
        assert r["delta"] == pytest.approx(_paired_delta(scores, r["arm"], ref, r["column"]), abs=1e-9), r
    # crc9 and Average of every arm but the baseline, and of the planned comparison
    assert cells.height >= (len(arms) - 1) * 2 + 2
    assert set(cells.filter(pl.col("row_type") == "comparison")["arm"]) == {"photometric_nokde"}

    # Δ vs random init: arm mean over training seeds minus random init's mean over its init seeds (unpaired)
    random_init = _scores(results, probe, backbone="random_init")
    for r in table.filter((pl.col("row_type") == "cell") & (pl.col("column") == "crc9")).iter_rows(named=True):
        arm = scores.filter((pl.col("arm") == r["arm"]) & (pl.col("task") == "crc9"))["value"].mean()
        want = arm - random_init.filter(pl.col("task") == "crc9")["value"].mean()
        assert r["delta_random_init"] == pytest.approx(want, abs=1e-9), r

    md = (report_dir / "report.md").read_text()
    assert f"probe={probe}" in md
    assert md.index("## Does each arm beat an untrained network?") < md.index("## Ablation table")
    assert md.count("|") > 20


@pytest.mark.timeout(1200)  # the session's one demo run (~90 s on 2 cores) is timed with this test
def test_demo_script_produces_the_study_and_its_reports(demo_output: Path) -> None:
    out = demo_output
    plan = _plan()
    arms = {a.name for a in plan.arms}
    assert arms == {"no_photometric", "photometric", "photometric_nokde"}
    results = out / STUDY / "results.parquet"
    df = pl.read_parquet(results)

    trials = df.filter(pl.col("trial_id") != "reference")
    assert set(trials["arm"].unique()) == arms  # every arm of the study ...
    per_arm = trials.select("arm", "seed", "status").unique()
    assert per_arm.height == len(arms) * SEEDS and set(per_arm["status"]) == {"TERMINATED"}  # ... once per seed
    steps = trials.filter(pl.col("kind") == "train").group_by("arm", "seed").agg(pl.col("step").max())
    assert set(steps["step"]) == {STEPS}
    scores = df.filter((pl.col("kind") == "eval") & pl.col("metric").is_in(["balanced_accuracy", "accuracy",
                                                                              "macro_f1"]))
    assert scores.height > 0 and scores["value"].is_between(0.0, 1.0).all()
    assert set(scores["task"].drop_nulls()) == {"crc9"} and set(scores["probe"].drop_nulls()) == set(PROBES)
    for probe in PROBES:  # every arm was evaluated with both probes at every seed
        assert _scores(results, probe).select("arm", "seed").unique().height == len(arms) * SEEDS

    ref = df.filter(pl.col("trial_id") == "reference")  # the baselines, once per sweep
    assert set(ref["backbone"]) == {"random_init", "color_histogram"}
    n_init = plan.eval["random_init_seeds"]
    assert ref.filter(pl.col("backbone") == "random_init")["seed"].n_unique() == n_init

    for probe in PROBES:
        _check_report(out / f"report-{probe}", results, probe, arms, baseline="no_photometric")
        assert (out / f"report-{probe}" / "ablation.png").stat().st_size > 10_000


def test_power_from_the_demo_results(demo_output: Path, capsys) -> None:
    from pathfm.cli import main

    assert main(["analyze", "power", str(demo_output / STUDY), "--probe", "knn", "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert f"seeds per arm: {SEEDS}-{SEEDS}" in out and "An effect of 0.05 needs" in out


def test_the_main_job_prints_a_line_per_trial_not_ray_tunes_tables(demo_output: Path) -> None:
    """The terminal shows pathfm's own line as each trial starts and ends; Ray Tune's per-trial configuration and
    result tables (hundreds of box-drawing lines) only with --verbose."""
    log = (demo_output.parent / "demo.log").read_text()
    done = [int(m) for m in re.findall(r"\((\d+) of (?:\d+) done\)", log)]
    started = re.findall(r"\(started (\d+) of (\d+)\)", log)
    assert started and done, log[-3000:]
    total = int(started[0][1])
    assert total == _plan().n_trials
    assert sorted(done) == list(range(1, total + 1)) and len(started) >= total
    assert not set("╭╮╰╯│─") & set(log), [ln for ln in log.splitlines() if set("╭│") & set(ln)][:5]
