"""The bundled studies stain_aug, data_mix and tile_pool (issue 14): every arm resolves to what its source says."""

from __future__ import annotations

import pytest

from pathfm.ablations.expand import plan_for
from pathfm.ablations.study import find_study
from pathfm.cli import main
from pathfm.data.provenance import training_entries
from pathfm.errors import ConfigError


def _configs(study: str, scale: str = "smoke") -> dict:
    plan = plan_for(study, scale)
    return {a.name: plan.arm_config(a.name) for a in plan.arms}


def test_stain_aug_arms_set_one_method_each():
    cfg = _configs("stain_aug")
    assert {n: c.data.stain_aug.method for n, c in cfg.items()} == {
        "hed": "hed", "none": "none", "randstainna": "randstainna", "macenko": "macenko"}
    assert cfg["hed"].data.hed.strength == 0.05 and cfg["macenko"].data.stain_aug.macenko.strength == 0.2


def test_data_mix_arms_are_the_registry_cohort_sets_and_an_absent_cohort_is_named():
    cfg = _configs("data_mix")
    four = {"TCGA", "NKI", "CPTAC", "GTEx"}
    assert set(cfg["four"].data.cohorts) == four and cfg["tcga"].data.cohorts == ["TCGA"]
    for left_out in four:
        assert set(cfg[f"four-{left_out}"].data.cohorts) == four - {left_out}
    assert all(c.data.cohort_weights is None for c in cfg.values())
    assert [e.slide_id for e in training_entries(cfg["tcga"].data)] == ["TCGA-CR-7395-01A-01-TS1"]
    with pytest.raises(ConfigError, match=r"no slide of cohort NKI, CPTAC, GTEx in .*manifest.csv"):
        training_entries(cfg["four"].data)  # the bundled manifest holds TCGA only of the four


@pytest.mark.parametrize("scale,tiles_per_step", [("smoke", 4), ("small", 64), ("paper", 256), ("paper-vitg", 768)])
def test_tile_pool_arms_see_each_pool_tile_4_and_16_times_at_equal_compute(scale, tiles_per_step):
    cfg = _configs("tile_pool", scale)
    assert cfg["online"].data.n_tiles is None
    steps = {c.optim.steps for c in cfg.values()}
    assert len(steps) == 1  # equal compute
    seen = steps.pop() * tiles_per_step
    assert seen / cfg["pool_4views"].data.n_tiles == pytest.approx(4, rel=1e-6)
    assert seen / cfg["pool_16views"].data.n_tiles == pytest.approx(16, rel=1e-6)
    if scale == "paper-vitg":
        assert cfg["pool_4views"].data.n_tiles == 96_000_000  # Midnight's fixed set: 100M tiles


def test_every_arm_names_its_source_and_ablate_list_shows_the_studies(capsys):
    tags = ("[P]", "[K]", "[?]", "[I]", "[D]")
    for name in ("stain_aug", "data_mix", "tile_pool"):
        text = find_study(name).read_text()
        comments = [line for line in text.splitlines() if line.startswith("#")]
        for arm in {a.name for a in plan_for(name, "smoke").arms}:
            said = [line for line in comments if arm in line]
            assert said and any(t in line for line in said for t in tags), (name, arm)
    assert main(["ablate", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("stain_aug", "data_mix", "tile_pool"):
        assert any(line.startswith(name + " ") for line in out.splitlines())
