"""The one cost estimator shared by sweep pre-flights and ablation studies (pure functions)."""

from __future__ import annotations

import pytest

from pathfm.ablations.estimate import plan_costs, total_hours
from pathfm.ablations.expand import plan_for
from pathfm.sweeps.cost import sweep_hours, trial_hours
from pathfm.sweeps.spec import expand_trials


def test_trial_hours_sum_the_stages_add_the_overhead_and_scale_with_devices():
    assert trial_hours([(3600, 1.0)]) == 1.0
    assert trial_hours([(1000, 2.0), (400, 4.0)], overhead_s=0.0, devices=1) == pytest.approx(3600 / 3600)
    assert trial_hours([(1000, 2.0), (400, 4.0)], overhead_s=360.0, devices=8) == pytest.approx(8 * 1.1)
    assert trial_hours([(0, 5.0)], overhead_s=0.0) == 0.0


def test_sweep_hours_charge_each_trial_its_arm_and_unknown_arms_the_mean():
    trials = [{"arm": "a"}, {"arm": "a"}, {"arm": "b"}, {"arm": None}]
    assert sweep_hours(trials, {"a": 1.0, "b": 3.0}) == 1.0 + 1.0 + 3.0 + 2.0
    assert sweep_hours(trials, {None: 0.5}) == 4 * 0.5  # one cost for every trial (the sweep pre-flight)


def test_a_study_is_costed_over_the_trials_its_sweep_expands():
    plan = plan_for("hed", "smoke")
    trials = expand_trials(plan.to_sweep_spec(), validate=False)
    costs = plan_costs(plan)
    by_arm = {c.arm: c.hours_per_trial for c in costs}
    assert len(trials) == plan.n_trials and total_hours(plan, costs) == pytest.approx(sum(by_arm[t["arm"]] for t in trials))


def test_concurrent_trials_fit_the_cluster_under_the_cap():
    from pathfm.sweeps.cost import concurrent_trials
    from pathfm.sweeps.spec import Resources

    cpu2, gpu1x2 = Resources(cpu=2), Resources(cpu=4, gpu=1, workers=2)
    assert concurrent_trials(cpu2, None, {"CPU": 7}) == 3
    assert concurrent_trials(cpu2, 2, {"CPU": 16}) == 2 and concurrent_trials(cpu2, 9, {"CPU": 16}) == 8
    assert concurrent_trials(cpu2, None, {"CPU": 1}) == 1  # never 0: one trial waits for the others
    assert concurrent_trials(cpu2, None, {"CPU": 16}, n_trials=5) == 5
    assert concurrent_trials(gpu1x2, None, {"CPU": 64, "GPU": 8}) == 4  # a DDP trial holds its workers' GPUs
    assert concurrent_trials(gpu1x2, None, None) is None and concurrent_trials(gpu1x2, 3, None) == 3


def test_a_study_plan_wraps_the_typed_sweep_spec_it_runs():
    from pathfm.sweeps.spec import SweepSpec

    plan = plan_for("hed", "smoke")
    assert isinstance(plan.spec, SweepSpec)
    assert plan.seeds == plan.spec.seeds and plan.resources == plan.spec.resources.model_dump()
    assert [a.name for a in plan.spec.arms] == [a.name for a in plan.arms]
    copy = plan.to_sweep_spec()
    copy.name = "renamed"
    assert plan.spec.name == plan.sweep_name() == "hed-v1-smoke" != copy.name
