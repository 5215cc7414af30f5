"""Every named study expands to the right arms: counts, one shared baseline, nested data subsets,
deduplicated arms with both names, comparisons, seeds, and a valid SweepSpec."""

from __future__ import annotations

import json

import pytest
import yaml

from pathfm.ablations.expand import expand_study, geometric_grid, plan_for
from pathfm.ablations.study import StudyError, bundled_studies, load_study, parse_study
from pathfm.config import get_dotted

NAMED = ["component", "kde", "hsv", "hed", "data", "highres", "interactions"]
SMOKE_ARMS = {"component": 8, "kde": 11, "hsv": 6, "hed": 5, "data": 5, "highres": 4, "interactions": 8}


def test_every_named_study_is_bundled_and_versioned():
    assert set(NAMED) <= set(bundled_studies())
    for name in NAMED:
        s = load_study(name)
        assert s.study == name and s.version >= 1 and s.description


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_named_studies_expand_at_every_scale(name, scale):
    plan = plan_for(name, scale, max_slides=None if scale == "smoke" else 40)
    names = [a.name for a in plan.arms]
    assert len(names) == len(set(names))
    assert plan.baseline_arm in names
    assert plan.n_trials == len(plan.arms) * len(plan.seeds)
    for a, ref in plan.comparisons:
        assert a in names and ref in names and a != ref
    if scale == "smoke":
        assert len(plan.arms) == SMOKE_ARMS[name]
    # exactly one arm per distinct training config (dedup), whatever the scale
    configs = {json.dumps(plan.arm_config(n).model_dump(mode="json"), sort_keys=True) for n in names}
    assert len(configs) == len(names)


def _cfg(plan, arm):
    return plan.arm_config(arm)


def test_component_study_builds_up_and_tears_down_the_recipe():
    plan = plan_for("component", "smoke")
    names = [a.name for a in plan.arms]
    assert names == ["dinov2", "+kde", "+hsv", "+hed", "full", "-kde", "-hsv", "-hed"]
    assert plan.baseline_arm == "dinov2"
    base = _cfg(plan, "dinov2")  # the DINOv2 baseline: KoLeo 0.1, no KDE, no HSV, no HED, no high-res
    assert base.loss.koleo_weight == 0.1 and base.loss.kde_weight == 0.0
    assert not base.data.tissue.enabled and base.data.hed.strength == 0.0 and not base.highres.enabled
    full = _cfg(plan, "full")
    assert full.loss.koleo_weight == 0.0 and full.loss.kde_weight == 0.05 and full.data.tissue.enabled
    assert full.data.tissue.min_tissue_fraction == 0.6 and full.data.hed.strength == 0.05 and full.highres.enabled
    # one shared baseline: a single arm with every component off
    off = [a for a in plan.arms if all(v == 0 for k, v in a.labels.items() if k in ("kde", "hsv", "hed", "highres"))]
    assert [a.name for a in off] == ["dinov2"]
    # cumulative: each step switches on exactly one more component
    steps = ["dinov2", "+kde", "+hsv", "+hed", "full"]
    for prev, cur in zip(steps, steps[1:]):
        p, c = plan.arm(prev).labels, plan.arm(cur).labels
        assert sum(c[k] - p[k] for k in ("kde", "hsv", "hed", "highres")) == 1
    # leave-one-out: "-highres" is the same run as "+hed": run once, both names recorded
    assert plan.arm("+hed").aliases == ["-highres"]
    assert plan.arm("-highres").name == "+hed"
    assert ("full", "+hed") in plan.comparisons and ("-hed", "full") in plan.comparisons
    assert ("+hed", "full") not in plan.comparisons  # the same pair is listed once
    assert ("+kde", "dinov2") in plan.comparisons
    assert plan.n_trials == 16  # 8 arms x 2 smoke seeds
    assert plan.to_dict()["arm_aliases"] == {"+hed": ["-highres"]}


def test_photometric_study_is_the_cpu_preset_with_and_without_dinov2_photometric_augmentation():
    """The main job's study (scripts/demo.sh): no_photometric is the cpu preset itself, photometric switches on
    the augmentation docs/training-health.md lists, photometric_nokde differs from photometric only in KDE."""
    from pathfm.config import load_config

    plan = plan_for("photometric", "cpu", seeds=3, overrides={"steps": 300})
    assert [a.name for a in plan.arms] == ["no_photometric", "photometric", "photometric_nokde"]
    assert plan.baseline_arm == "no_photometric" and plan.comparisons == [("photometric_nokde", "photometric")]
    assert plan.eval["tasks"] == ["crc9"] and set(plan.eval["probes"]) == {"linear", "knn"}
    preset = load_config("cpu").model_dump(mode="json")
    off, on, nokde = (_cfg(plan, a).model_dump(mode="json") for a in ("no_photometric", "photometric",
                                                                       "photometric_nokde"))
    assert off["data"] == preset["data"] and off["loss"] == preset["loss"] and off["optim"]["steps"] == 300
    crops = on["data"]["crops"]
    assert (crops["color_jitter"], crops["jitter_strength"], crops["grayscale"]) == (0.8, [0.4, 0.4, 0.2, 0.1], 0.2)
    assert (crops["blur_global1"], crops["blur_global2"], crops["blur_local"]) == (1.0, 0.1, 0.5)
    assert crops["solarize_global2"] == 0.2 and on["data"]["hed"]["strength"] == 0.05
    assert on["loss"] == preset["loss"]
    assert nokde["loss"]["kde_weight"] == 0.0 and {**nokde, "loss": on["loss"]} == on


def test_kde_study_crosses_weight_and_kappa_with_references():
    plan = plan_for("kde", "smoke")
    koleo, off = _cfg(plan, "koleo"), _cfg(plan, "off")
    assert koleo.loss.koleo_weight == 0.1 and koleo.loss.kde_weight == 0
    assert off.loss.koleo_weight == 0 and off.loss.kde_weight == 0
    grid = {(plan.arm_config(a.name).loss.kde_weight, plan.arm_config(a.name).loss.kde_kappa)
            for a in plan.arms if a.block == "grid"}
    assert grid == {(w, k) for w in (0.01, 0.05, 0.2) for k in (1.0, 5.0, 20.0)}
    assert all(plan.arm_config(a.name).loss.koleo_weight == 0 for a in plan.arms if a.block == "grid")
    assert plan.arm("kde0.05_k5").labels == {"kde_weight": 0.05, "kde_kappa": 5.0}


def test_hsv_and_hed_studies_sweep_the_issue_values():
    hsv = plan_for("hsv", "smoke")
    fracs = sorted(_cfg(hsv, a.name).data.tissue.min_tissue_fraction for a in hsv.arms if a.name != "off")
    assert fracs == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert not _cfg(hsv, "off").data.tissue.enabled
    assert all(_cfg(hsv, a.name).data.tissue.enabled for a in hsv.arms if a.name != "off")
    assert hsv.analysis["plot_against"] == "acceptance_rate"
    hed = plan_for("hed", "smoke")
    assert [_cfg(hed, a.name).data.hed.strength for a in hed.arms] == [0.0, 0.02, 0.05, 0.1, 0.2]
    assert hed.baseline_arm == "sigma0"


def test_data_ladder_is_geometric_nested_and_has_both_variants(wsi_dir):
    from pathfm.data.manifest import load_manifest
    from pathfm.data.subsets import nested_subset

    plan = plan_for("data", "smoke")  # the 3 bundled slides: 1, 2, 3
    compute = [a for a in plan.arms if a.labels["variant"] == "equal_compute"]
    assert [a.labels["n_slides"] for a in compute] == [1, 2, 3]
    top = plan.arm("all-equal_compute")
    assert top.aliases == ["all-equal_epochs"]  # same run in both variants
    steps = _cfg(plan, "all-equal_compute").optim.steps
    for a in plan.arms:
        cfg = _cfg(plan, a.name)
        if a.labels["variant"] == "equal_compute":
            assert cfg.optim.steps == steps
        else:  # steps proportional to n_slides
            assert cfg.optim.steps == max(1, round(steps * a.labels["n_slides"] / 3))
    # subsets are nested: every smaller arm's slides are inside every larger arm's
    entries = load_manifest(wsi_dir)
    subsets = [{e.slide_id for e in nested_subset(entries, _cfg(plan, a.name).data.n_slides,
                                                  _cfg(plan, a.name).data.subset_seed)} for a in compute]
    assert all(small < big for small, big in zip(subsets, subsets[1:]))
    # a big manifest: 1, 2, 4, ..., 32, 50 and equal-epochs schedules shrink with the steps
    big = plan_for("data", "paper", max_slides=50)
    assert sorted({a.labels["n_slides"] for a in big.arms}) == [1, 2, 4, 8, 16, 32, 50]
    assert len(big.arms) == 13
    one = big.arm_config("n1-equal_epochs")
    assert one.optim.steps == round(166700 / 50) and one.optim.warmup_steps == round(12500 / 50)


def test_geometric_grid():
    assert geometric_grid(1, 3) == [1, 2, 3]
    assert geometric_grid(1, 8) == [1, 2, 4, 8]
    assert geometric_grid(1, 1) == [1]
    assert geometric_grid(2, 100, 3) == [2, 6, 18, 54, 100]


def test_highres_study_lengths_are_fractions_of_the_main_stage():
    plan = plan_for("highres", "paper")
    assert not _cfg(plan, "off").highres.enabled
    lengths = [_cfg(plan, a.name).highres.steps for a in plan.arms if a.name != "off"]
    assert lengths == [round(166700 * f) for f in (0.05, 0.1, 0.25)]
    assert plan.eval_resolutions == ["train", "highres"]


def test_interactions_study_is_a_balanced_resolution_iv_fraction():
    plan = plan_for("interactions", "smoke")
    coded = [[a.labels[f"design.{f}"] for f in ("kde", "hsv", "hed", "highres")] for a in plan.arms]
    import numpy as np

    from pathfm.ablations.design import is_balanced, is_orthogonal

    x = np.array(coded)
    assert x.shape == (8, 4) and is_balanced(x) and is_orthogonal(x)
    assert plan.baseline_arm == "none"
    assert _cfg(plan, "+kde+hsv+hed+highres").highres.enabled


def test_seeds_option_and_n_trials():
    plan = plan_for("hed", "smoke", seeds=3)
    assert plan.seeds == [0, 1, 2] and plan.n_trials == 15
    assert plan_for("hed", "smoke", seeds=[5, 7]).seeds == [5, 7]
    with pytest.raises(StudyError, match="seeds"):
        plan_for("hed", "smoke", seeds=0)


def test_only_arms_keeps_aliases_and_drops_missing_baseline():
    plan = plan_for("component", "smoke", only_arms=["full", "-highres"])
    assert [a.name for a in plan.arms] == ["+hed", "full"]
    assert plan.baseline_arm is None
    assert plan.comparisons == [("full", "+hed")]


def test_sweep_spec_from_a_plan_validates_and_expands_to_arms_times_seeds():
    from pathfm.sweeps.spec import expand_trials

    plan = plan_for("component", "smoke", seeds=2)
    spec = plan.to_sweep_spec()
    assert spec.meta.study == "component" and spec.meta.baseline_arm == "dinov2"
    assert spec.meta.version == 1 and ("full", "+hed") in [tuple(c) for c in spec.meta.comparisons]
    trials = expand_trials(spec)
    assert len(trials) == 16
    assert {(t["arm"], t["seed"]) for t in trials} == {(a.name, s) for a in plan.arms for s in (0, 1)}
    t = next(t for t in trials if t["arm"] == "dinov2")
    assert t["overrides"]["loss.koleo_weight"] == 0.1 and t["overrides"]["optim.steps"] == 8


def test_set_overrides_apply_to_every_arm_but_cannot_fight_the_arms():
    plan = plan_for("hed", "smoke", overrides={"steps": 6})
    assert all(_cfg(plan, a.name).optim.steps == 6 for a in plan.arms)
    with pytest.raises(StudyError, match="varies it across arms"):
        plan_for("hed", "smoke", overrides={"hed_strength": 0.3})


def _write(tmp_path, data, name="my_study.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_a_copied_and_edited_study_runs_from_its_path(tmp_path):
    data = yaml.safe_load(bundled_studies()["hed"].read_text())
    data["arms"][0]["grid"]["hed_strength"] = [0.0, 0.3]
    data["study"], data["version"] = "hed_wide", 2
    plan = plan_for(_write(tmp_path, data), "smoke")
    assert [a.name for a in plan.arms] == ["sigma0", "sigma0.3"]
    assert plan.sweep_name() == "hed_wide-v2-smoke"


def test_yaml_on_off_component_keys_are_understood(tmp_path):
    text = """
study: tiny
version: 1
description: x
baseline: dinov2
components:
  kde:
    off: {koleo_weight: 0.1, kde_weight: 0.0}
    on: {kde_weight: 0.05}
arms:
  - cumulative: {order: [kde]}
"""
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    plan = plan_for(p, "smoke")
    assert [a.name for a in plan.arms] == ["dinov2", "+kde"]


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d["arms"].append({"name": "x", "overrides": {"kde_wieght": 1}}), "kde_wieght"),
    (lambda d: d["arms"].append({"name": "x", "overrides": {"hed_strength": 5.0}}), "arm 'x'"),
    (lambda d: d.update(baseline="nope"), "baseline names arm 'nope'"),
    (lambda d: d["arms"].append({"name": "sigma0", "overrides": {"hed_strength": 0.5}}), "two different"),
    (lambda d: d["arms"].append({"cumulative": {"order": ["kde"]}}), "unknown component 'kde'"),
    (lambda d: d["arms"].append({"grid": {"hed_strength": [0.1]}, "ladder": {}}), "several generators"),
    (lambda d: d.pop("version"), "version"),
])
def test_bad_studies_fail_with_a_message_naming_the_fault(tmp_path, mutate, msg):
    data = yaml.safe_load(bundled_studies()["hed"].read_text())
    mutate(data)
    with pytest.raises(StudyError, match=msg):
        plan_for(_write(tmp_path, data), "smoke")


def test_unknown_study_and_scale():
    with pytest.raises(StudyError, match="did you mean component"):
        load_study("componnet")
    from pathfm.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scale"):
        plan_for("hed", "huge")


def test_parse_study_rejects_unknown_fields():
    with pytest.raises(StudyError, match="baseline_arm"):
        parse_study({"study": "x", "version": 1, "description": "", "baseline": "a", "baseline_arm": "a",
                     "arms": [{"name": "a"}]})


def test_scale_precedence_study_overrides_win_over_scale(tmp_path):
    data = yaml.safe_load(bundled_studies()["hed"].read_text())
    data["scales"] = {"smoke": {"overrides": {"steps": 5}, "seeds": 1}}
    plan = expand_study(parse_study(data, "mem"), "smoke")
    assert plan.seeds == [0] and get_dotted(plan.arm_config("sigma0"), "steps") == 5


def test_set_steps_rescales_the_equal_epochs_ladder():
    plan = plan_for("data", "smoke", overrides={"steps": 30})
    assert plan.arm_config("all-equal_compute").optim.steps == 30
    assert plan.arm_config("n1-equal_epochs").optim.steps == 10
    with pytest.raises(StudyError, match="varies it"):
        plan_for("data", "smoke", overrides={"n_slides": 2})
    with pytest.raises(StudyError, match="varies it"):
        plan_for("highres", "smoke", overrides={"highres_steps": 3})


def test_factorial_block_over_knob_levels_crosses_them(tmp_path):
    text = """
study: kde_x_hed
version: 1
description: KDE x HED 2^2
baseline: none
arms:
  - factorial:
      factors: [kde_weight, hed_strength]
      levels: {kde_weight: [0.0, 0.05], hed_strength: [0.0, 0.05]}
      none_name: none
"""
    p = tmp_path / "kde_x_hed.yaml"
    p.write_text(text)
    plan = plan_for(p, "smoke")
    assert len(plan.arms) == 4 and plan.baseline_arm == "none"
    cells = {(plan.arm_config(a.name).loss.kde_weight, plan.arm_config(a.name).data.hed.strength) for a in plan.arms}
    assert cells == {(0.0, 0.0), (0.05, 0.0), (0.0, 0.05), (0.05, 0.05)}
    assert {a.labels["design.kde_weight"] for a in plan.arms} == {-1, 1}


def test_explicit_comparisons_of_a_study_are_kept():
    assert plan_for("kde", "smoke").comparisons == [("off", "koleo")]


def test_factorial_plans_record_their_design_and_aliases():
    plan = plan_for("interactions", "smoke")
    (d,) = plan.designs
    assert d["resolution"] == 4 and d["runs"] == 8 and d["generators"] == ["highres=kde*hsv*hed"]
    assert d["aliases"]["kde*hed"] == ["hsv*highres"]
    assert "kde" not in d["aliases"]  # main effects are clear of two-factor interactions
    assert plan.to_dict()["designs"] == plan.designs


# Hand counts for the hed study at smoke (5 arms) with 2 seeds; the old count ignored `choice` entries,
# `num_samples` without a space, the choice entries crossed into random draws, and that an adaptive
# search runs `num_samples` trials in all (arms and seeds are dimensions it searches).
PLAN_COUNTS = [
    ("grid", {"kde_weight": {"grid": [0.0, 0.1]}}, None, 5 * 2 * 2),
    ("grid+choice", {"kde_weight": {"grid": [0.0, 0.1]}, "base_lr": {"choice": [1e-3, 2e-3, 3e-3]}}, None, 5 * 2 * 6),
    ("grid repeats", {}, {"algorithm": "grid", "num_samples": 2}, 5 * 2 * 2),
    ("random", {"kde_weight": {"loguniform": [1e-3, 0.5]}, "base_lr": {"choice": [1e-3, 2e-3, 3e-3]}},
     {"algorithm": "random", "num_samples": 4}, 5 * 2 * 4 * 3),
    ("optuna", {"kde_weight": {"loguniform": [1e-3, 0.5]}}, {"algorithm": "optuna", "num_samples": 7}, 7),
]


@pytest.mark.parametrize("label,space,search,expected", PLAN_COUNTS, ids=[c[0] for c in PLAN_COUNTS])
def test_plan_counts_trials_exactly_as_the_sweep_expands_them(label, space, search, expected):
    from pathfm.ablations.estimate import plan_costs, total_hours
    from pathfm.sweeps.spec import expand_trials

    data = yaml.safe_load(bundled_studies()["hed"].read_text())
    data["space"] = space
    if search:
        data["search"] = search
    plan = expand_study(parse_study(data, source=label), "smoke", seeds=2)
    assert len(plan.arms) == 5
    trials = expand_trials(plan.to_sweep_spec())  # what `pathfm ablate run` hands to the sweep
    assert plan.n_trials == len(trials) == expected
    assert plan.to_dict()["n_trials"] == expected
    costs = plan_costs(plan)
    mean = sum(c.hours_per_trial for c in costs) / len(costs)
    assert total_hours(plan, costs) == pytest.approx(mean * expected)  # every arm equally often, or chosen by the search


def test_planted_study_keeps_its_null_arm_apart_and_evaluates_on_crc():
    """The null arm has the baseline's config: seed_offset makes it an independent run (not an alias)."""
    plan = plan_for("planted", "smoke")
    assert [a.name for a in plan.arms] == ["baseline", "destroyed", "null"] and plan.baseline_arm == "baseline"
    assert all(not a.aliases for a in plan.arms)
    assert plan.arm("null").seed_offset == 1000 and plan.arm("null").overrides == {}
    assert plan.eval["tasks"] == ["crc"] and plan.eval["probes"] == ["linear"]  # study eval over the scale's
    assert plan.arm_config("null") == plan.arm_config("baseline")
    trials = plan.sweep_trials()
    null = sorted((t["seed"], t["overrides"]["seed"]) for t in trials if t["arm"] == "null")
    assert null == [(0, 1000), (1, 1001)]
    assert plan.arm_config("destroyed").data.normalize_std == 1e12
