"""Cost estimate (step-time table and FLOP model), arm-label columns, and run guards (no Ray needed)."""

from __future__ import annotations

import pytest

from pathfm.ablations.estimate import arm_cost, plan_costs, total_hours, vit_forward_flops, wall_hours
from pathfm.ablations.expand import plan_for
from pathfm.ablations.run import run_plan
from pathfm.sweeps.collect import label_columns
from pathfm.ablations.scales import get_scale
from pathfm.ablations.study import StudyError


def test_flop_model_grows_with_width_depth_and_resolution():
    f = {a: vit_forward_flops(a, 224, 14) for a in ("vit_small", "vit_base", "vit_giant")}
    assert f["vit_small"] < f["vit_base"] < f["vit_giant"]
    # ViT-B/14 at 224 px: ~23 GFLOPs forward (257 tokens), the known order of magnitude
    assert 40e9 < f["vit_base"] < 50e9  # FLOPs = 2 x MACs
    assert vit_forward_flops("vit_base", 392, 14) > 3 * f["vit_base"]


def test_measured_step_times_are_used_and_high_res_adds_its_stage():
    plan = plan_for("component", "smoke", seeds=2)
    scale = get_scale("smoke")
    off = arm_cost(plan.arm_config("dinov2"), scale, "dinov2")
    on = arm_cost(plan.arm_config("full"), scale, "full")
    assert off.source == "measured" and off.s_per_step_main == scale.step_time_s["vit_pico@112"]
    assert off.highres_steps == 0 and on.highres_steps == 4
    expected_on = (8 * scale.step_time_s["vit_pico@112"] + 4 * scale.step_time_s["vit_pico@168"]
                   + scale.trial_overhead_s) / 3600
    assert on.hours_per_trial == pytest.approx(expected_on)
    costs = plan_costs(plan)
    assert total_hours(plan, costs) == pytest.approx(2 * sum(c.hours_per_trial for c in costs))
    assert wall_hours(plan, costs, cpus=2) == pytest.approx(total_hours(plan, costs) / 2)  # 2 trials at once
    assert wall_hours(plan, costs, cpus=4) == pytest.approx(total_hours(plan, costs) / 4)


def test_paper_scale_counts_every_gpu_of_a_ddp_trial():
    plan = plan_for("hed", "paper", overrides={"data.slides": "samples/wsi"})
    c = plan_costs(plan)[0]
    assert c.source == "flop model" and c.main_steps == 166700
    per_gpu = c.main_steps * c.s_per_step_main / 3600
    assert c.hours_per_trial == pytest.approx(4 * per_gpu)  # 4 workers
    assert wall_hours(plan) is None  # concurrency depends on the cluster


def test_label_columns_keep_only_labels_that_vary():
    plan = plan_for("data", "smoke")
    cols = label_columns(plan.to_dict())
    assert cols["n_slides"] == {"n1-equal_compute": 1, "n2-equal_compute": 2, "all-equal_compute": 3,
                                "n1-equal_epochs": 1, "n2-equal_epochs": 2}
    assert set(cols["variant"].values()) == {"equal_compute", "equal_epochs"}
    hed = label_columns(plan_for("hed", "smoke").to_dict())
    assert list(hed) == ["hed_strength"]


def test_a_study_does_not_overwrite_an_existing_sweep(tmp_path):
    plan = plan_for("hed", "smoke")
    existing = tmp_path / plan.sweep_name()
    existing.mkdir()
    (existing / "sweep_spec.yaml").write_text("name: x\n")
    with pytest.raises(StudyError, match="pathfm sweep resume"):
        run_plan(plan, tmp_path)
    assert not (existing / "study_plan.json").exists()


def test_the_full_recipe_at_vitg_is_its_own_scale():
    plan = plan_for("component", "paper-vitg", only_arms=["full"], seeds=1, overrides={"data.slides": "samples/wsi"})
    cfg = plan.arm_config("full")
    assert cfg.model.arch == "vit_giant" and cfg.optim.steps == 500000 and cfg.highres.enabled
    assert cfg.highres.global_size == 392 and cfg.loss.kde_weight == 0.05
    (c,) = plan_costs(plan)
    assert c.hours_per_trial > 1000  # thousands of GPU-hours on 32 GPUs, as the paper's budget
