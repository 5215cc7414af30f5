"""End to end: the `component` study at smoke scale on a real local Ray (2 CPUs), trained on the bundled
slides, evaluated on the bundled CRC and osteosarcoma tiles, collected into results.parquet and read by
pathfm.analysis (1 seed, 4 main steps, the smoke scale's 4 high-res steps; ~100 s on 2 cores)."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from pathfm.ablations.expand import plan_for
from pathfm.ablations.scales import get_scale

# the first test of the module is timed with the sweep (~100 s on 2 cores)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
STEPS = 4


@pytest.fixture(scope="module")
def component_sweep(tmp_path_factory):
    from pathfm.ablations.run import run_plan

    plan = plan_for("component", "smoke", seeds=1, overrides={"steps": STEPS})
    return plan, run_plan(plan, tmp_path_factory.mktemp("component"), num_cpus=2, verbose=0)


def test_component_smoke_yields_every_arm_and_seed(component_sweep):
    plan, sweep_dir = component_sweep
    df = pl.read_parquet(sweep_dir / "results.parquet")
    ref = df.filter(pl.col("trial_id") == "reference")  # the baselines, once for the sweep
    assert set(ref["backbone"]) == {"random_init", "color_histogram"} and set(ref["task"]) == {"crc", "osteo"}
    df = df.filter(pl.col("trial_id") != "reference")
    arms = {a.name for a in plan.arms}
    assert set(df["arm"].unique().to_list()) == arms
    trials = df.select("arm", "seed", "status").unique()
    assert trials.height == len(arms) * len(plan.seeds)
    assert set(trials["status"].to_list()) == {"TERMINATED"}
    ev = df.filter((pl.col("kind") == "eval") & (pl.col("metric") == "balanced_accuracy")
                   & (pl.col("backbone") == "trained") & (pl.col("probe") == "linear"))
    assert set(ev["arm"].unique().to_list()) == arms
    assert ev["value"].is_between(0, 1).all()
    # the trainer's measured tile acceptance rate is there for every arm (the HSV study plots against it)
    acc = df.filter((pl.col("metric") == "acceptance_rate") & pl.col("final"))
    assert set(acc["arm"].to_list()) == arms
    # arm labels become param columns; the high-res arms trained both stages
    assert {"param.kde", "param.hsv", "param.hed", "param.highres"} <= set(df.columns)
    steps = df.filter(pl.col("kind") == "train").group_by("arm").agg(pl.col("step").max())
    top = dict(zip(steps["arm"].to_list(), steps["step"].to_list()))
    assert top["dinov2"] == STEPS and top["full"] == STEPS + get_scale("smoke").overrides["highres_steps"]
    meta = json.loads((sweep_dir / "sweep_meta.json").read_text())
    assert meta["study"] == "component" and meta["baseline_arm"] == "dinov2"
    study = json.loads((sweep_dir / "study_plan.json").read_text())
    assert study["arm_aliases"] == {"+hed": ["-highres"]}


def test_the_analysis_reads_the_study(component_sweep):
    from pathfm.analysis.table import table_from_results

    plan, sweep_dir = component_sweep
    table = table_from_results(sweep_dir)
    assert set(table.arms) == {a.name for a in plan.arms}
    assert table.baseline == "dinov2"
    assert "crc" in table.columns
    assert table.references == ["random_init", "color_histogram"] and table.untrained_delta is not None


def test_extra_resolutions_are_evaluated_and_collected(component_sweep, tmp_path):
    """The highres study's `eval_resolutions`, on a copy of one finished trial (train 112 px, high-res 168 px)."""
    from pathfm.ablations.run import collect_study

    plan, sweep_dir = component_sweep
    one = tmp_path / sweep_dir.name
    one.mkdir()
    for f in ("sweep_meta.json", "sweep_spec.yaml", "study_plan.json"):
        shutil.copy(sweep_dir / f, one / f)
    trial = next(d for d in sweep_dir.iterdir() if (d / "trial.json").exists()
                 and json.loads((d / "trial.json").read_text())["arm"] == "full")
    shutil.copytree(trial, one / trial.name)
    info = json.loads((one / "study_plan.json").read_text())
    info["eval_resolutions"] = ["train", "highres"]
    out = collect_study(one, info)
    df = pl.read_parquet(out)
    tasks = set(df.filter(pl.col("kind") == "eval")["task"].drop_nulls().unique().to_list())
    assert {"crc", "crc@112px", "crc@168px"} <= tasks
    n = df.height
    collect_study(one, info)  # idempotent: nothing evaluated twice
    assert pl.read_parquet(out).height == n
