"""Planted-effect check, end to end on a real local Ray (2 CPUs): the bundled `planted` study at smoke scale
(4 steps, 2 seeds, crc) is trained, evaluated, collected and analysed; the analysis must flag the arm whose
inputs are destroyed and must not flag the null arm (the baseline re-seeded). ~80 s on 2 cores.

Measured (pathfm/ablations/studies/planted.yaml): over seed pairs (0,1), (2,3), (4,5), (6,7), (8,9) the
destroyed arm's Δ Average was -0.40 to -0.44 with the CI's upper end at most -0.33 (flagged 5 of 5), the null
arm's Δ -0.025 to +0.027 with a CI always containing 0 (flagged 0 of 5); the destroyed arm scores 0.11-0.125
(chance of the 8-class crc task is 0.125) whatever the seed. Training on CPU is deterministic, so this test
with seeds (0, 1) gives the same numbers every run."""

from __future__ import annotations

import polars as pl
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted_sweep(tmp_path_factory):
    from pathfm.ablations.expand import plan_for
    from pathfm.ablations.run import run_plan

    plan = plan_for("planted", "smoke", seeds=2, overrides={"steps": 4})
    sweep_dir = run_plan(plan, tmp_path_factory.mktemp("planted"), num_cpus=2, verbose=0)
    return plan, sweep_dir


def test_planted_study_trains_every_arm_and_one_reference(planted_sweep):
    plan, sweep_dir = planted_sweep
    assert [a.name for a in plan.arms] == ["baseline", "destroyed", "null"]  # the null arm is not merged
    df = pl.read_parquet(sweep_dir / "results.parquet")
    trials = df.filter(pl.col("trial_id") != "reference").select("arm", "seed", "status").unique()
    assert trials.height == 6 and set(trials["status"]) == {"TERMINATED"}
    ref = df.filter(pl.col("trial_id") == "reference")
    assert set(ref["backbone"]) == {"random_init", "color_histogram"} and set(ref["task"]) == {"crc"}
    trained = df.filter(pl.col("backbone").is_in(["random_init", "color_histogram"]) & (pl.col("trial_id") != "reference"))
    assert trained.height == 0  # the trials did not evaluate the baselines again


def test_analysis_flags_the_planted_effect_and_not_the_null_arm(planted_sweep, tmp_path):
    from pathfm.analysis.report import write_report
    from pathfm.analysis.table import table_from_results
    from pathfm.analysis.table_plot import significance

    _, sweep_dir = planted_sweep
    table = table_from_results(sweep_dir)
    assert table.baseline == "baseline"
    c = table.columns.index("Average")
    sig = significance(table)
    bad, null = table.arms.index("destroyed"), table.arms.index("null")
    assert sig["destroyed"] == "worse", (table.delta[bad, c], table.delta_lo[bad, c], table.delta_hi[bad, c])
    assert table.delta_hi[bad, c] < -0.2  # a large effect, far from the CI's edge
    assert sig["null"] == "unsure", (table.delta[null, c], table.delta_lo[null, c], table.delta_hi[null, c])
    assert table.untrained_verdicts()["destroyed"] == "worse"
    paths = write_report(sweep_dir, tmp_path / "report", imp_boot=2, fit_boot=10)
    md = paths[0].read_text()
    assert md.index("## Does each arm beat an untrained network?") < md.index("## Ablation table")
    assert "WORSE than an untrained network: destroyed" in md
    assert "random init (untrained, reference)" in md
    # every report audits the trials' recorded training slides against each evaluated task (crc lists no ids)
    assert "## Leakage audit" in md and "task crc: not auditable" in md
