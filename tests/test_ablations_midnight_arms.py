"""The bundled studies of the arms the Midnight authors trained (issue 14) and the blur defaults.

Each arm must resolve to the config its source describes; `pathfm ablate list` shows every study.
"""

from __future__ import annotations

import pytest
import yaml

from pathfm.ablations.expand import plan_for
from pathfm.cli import main
from pathfm.config import BLUR_INTENDED, BLUR_RELEASED, PRESET_DIR, Config, load_config

NEW = {"regulariser": 4, "hsv_midnight": 5, "schedule": 3, "augmentation": 5}


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_studies_expand_and_resolve_their_arms(name):
    plan = plan_for(name, "smoke")
    assert len(plan.arms) == NEW[name] and plan.baseline_arm in [a.name for a in plan.arms]
    cfg = {a.name: plan.arm_config(a.name) for a in plan.arms}
    if name == "regulariser":
        soft = cfg["koleo_nohed_softmax"]
        assert (soft.loss.centering, soft.loss.koleo_weight, soft.loss.kde_weight, soft.data.hed.strength) == (
            "softmax", 0.1, 0.0, 0.0)  # fmt: skip
        assert cfg["kde"].loss.centering == "sinkhorn_knopp" and cfg["kde"].loss.kde_weight == 0.05
    elif name == "hsv_midnight":
        assert cfg["hsv0.45"].data.tissue.min_tissue_fraction == 0.45 and cfg["hsv0.45"].data.tissue.enabled
        assert not cfg["no_filter"].data.tissue.enabled
    elif name == "schedule":
        assert cfg["long"].optim.steps == 3 * cfg["base"].optim.steps
        assert cfg["momentum0.9985"].optim.momentum_teacher == 0.9985
    else:
        crops = {n: {k: getattr(c.data.crops, k) for k in BLUR_RELEASED} for n, c in cfg.items()}
        assert crops["released"] == BLUR_RELEASED and crops["blur_intended"] == BLUR_INTENDED
        assert cfg["weak_jitter"].data.crops.jitter_strength == (0.2, 0.2, 0.1, 0.05)
        assert cfg["hed_p0.5"].data.hed.p == 0.5 and cfg["no_vflip"].data.crops.vflip == 0.0


def test_ablate_list_shows_the_new_studies(capsys):
    assert main(["ablate", "list"]) == 0
    out = capsys.readouterr().out
    for name in NEW:
        assert any(line.startswith(name + " ") and "v1" in line for line in out.splitlines())


def test_released_blur_is_the_default_and_the_recipe_presets_say_so_with_a_source_tag():
    c = Config().data.crops
    assert {k: getattr(c, k) for k in BLUR_RELEASED} == BLUR_RELEASED == {"blur_global1": 0.0, "blur_global2": 0.9, "blur_local": 0.5}
    for preset in ("midnight_vitg14", "vitb14_ablation"):
        crops = load_config(preset).data.crops
        assert {k: getattr(crops, k) for k in BLUR_RELEASED} == BLUR_RELEASED
        text = (PRESET_DIR / f"{preset}.yaml").read_text()
        for key in (*BLUR_RELEASED, "vflip", "color_jitter"):
            line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
            assert any(tag in line for tag in ("[D]", "[?]", "[P]", "[K]")), line
    assert yaml.safe_load((PRESET_DIR / "midnight_vitg14.yaml").read_text())["model"]["init_from"] == "dinov2:vitg14"
    cpu = load_config("cpu").data.crops  # switched off on purpose there
    assert (cpu.blur_global1, cpu.blur_global2, cpu.blur_local) == (0.0, 0.0, 0.0)


def test_midnight_highres_stage_has_the_reported_effective_batch():
    hr = load_config("midnight_vitg14").highres_stage()
    assert hr.data.batch_size * hr.optim.grad_accum * 48 == 1152  # 6 per GPU x 48 GPUs x 4 accumulation
    assert load_config("midnight_vitg14").optim.grad_accum == 2  # the main stage keeps its own
