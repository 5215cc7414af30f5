"""Every bundled preset and every ablation scale passes the start-up checks a real start runs, at the world
size it is meant for, and the dry-runs (``pathfm train --dry-run``, the sweep pre-flight, ``pathfm ablate
run --dry-run``) run those checks: a config a start would refuse is refused there too.

The checks are :func:`pathfm.ssl.sharding.startup_checks`, the function the trainer calls before it builds
anything; "cuda" is the device type a GPU start resolves ``run.device=auto`` to (no GPU needed: the checks
read the config only)."""

from __future__ import annotations

import io

import pytest

from pathfm.ablations.scales import load_scales
from pathfm.config import PRESET_DIR, load_config
from pathfm.errors import ConfigError
from pathfm.ssl.sharding import intended_device_type, startup_checks

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
SCALES = load_scales()


def _world_sizes(preset: str) -> list[int]:
    """1 and 2 processes, and the workers per trial of every scale built on the preset (32 for ViT-g)."""
    return sorted({1, 2} | {int(s.resources.get("workers", 1)) for s in SCALES.values() if s.base == preset})


def test_the_presets_and_scales_are_the_ones_this_test_knows():
    assert {"smoke", "cpu", "vitb14_ablation", "midnight_vitg14"} <= set(PRESETS)
    assert _world_sizes("midnight_vitg14") == [1, 2, 32] and SCALES["paper-vitg"].base == "midnight_vitg14"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_bundled_preset_passes_its_start_up_checks_at_its_world_sizes(preset):
    cfg = load_config(preset)
    for world in _world_sizes(preset):
        for device in {intended_device_type(cfg), "cpu"}:
            startup_checks(cfg, world, device)  # raises the ConfigError a start at this world size would


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_ablation_scale_passes_its_start_up_checks_with_its_workers(scale):
    sc = SCALES[scale]
    cfg = load_config(sc.base, dict(sc.overrides))
    device = "cuda" if sc.resources.get("gpu", 0) > 0 and cfg.run.device != "cpu" else "cpu"
    strategy = startup_checks(cfg, int(sc.resources.get("workers", 1)), device)
    if scale == "paper-vitg":
        assert strategy == "fsdp" and cfg.highres.enabled  # both stages of the sharded run were checked


def test_the_train_dry_run_refuses_what_a_start_at_world_size_refuses(tmp_path, monkeypatch, capsys):
    from pathfm.cli import main

    base = ["train", "smoke", "run.strategy=fsdp", "probe.every=5", "--dry-run", "--run-dir", str(tmp_path / "run")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(base) == 2
    assert "probe.every > 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process shards nothing: the probe runs
    assert main(base) == 0
    assert "start-up checks passed: strategy fsdp on cuda, 1 process(es)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="stage main: .*probe.every"):
        startup_checks(load_config("smoke", ["run.strategy=fsdp", "probe.every=5"]), 2, where="stage main")


def test_the_sweep_pre_flight_refuses_it_before_any_step():
    from pathfm.sweeps.runner import preflight
    from pathfm.sweeps.spec import expand_trials, spec_from_dict

    spec = spec_from_dict({"name": "probed", "base": "smoke",
                           "overrides": {"data.assume_mpp": 0.5, "run.strategy": "fsdp", "probe.every": 5},
                           "space": {"kde_weight": {"grid": [0.0, 0.05]}}, "eval": {"enabled": False},
                           "objective": {"metric": "loss", "mode": "min"},
                           "resources": {"cpu": 1, "gpu": 1, "workers": 2}})
    out = io.StringIO()
    with pytest.raises(ConfigError, match=r"trial 0: probe.every > 0 .*run.strategy=fsdp on several processes"):
        preflight(spec, expand_trials(spec), out=out)
    assert "one CPU step" not in out.getvalue()


def test_the_ablation_dry_run_checks_every_arm_at_the_scales_workers(capsys):
    from pathfm.ablations.cli import _validate_trials
    from pathfm.ablations.expand import expand_study
    from pathfm.ablations.study import load_study

    study = load_study("component")
    plan = expand_study(study, "paper-vitg", only_arms=["full"], seeds=1, overrides={"data.slides": "samples/wsi"})
    _validate_trials(plan)
    assert "start-up checks passed for 1 arm(s) at 32 process(es) per trial" in capsys.readouterr().out
    probed = expand_study(study, "paper-vitg", only_arms=["full"], seeds=1,
                          overrides={"data.slides": "samples/wsi", "probe.every": 10000})
    with pytest.raises(ConfigError, match="arm full: probe.every > 0"):
        _validate_trials(probed)


def test_every_arm_of_every_bundled_study_passes_at_every_scale():
    """What ``pathfm ablate run STUDY --scale S --dry-run`` checks, for all of them (415 arm configs, ~6 s)."""
    from pathfm.ablations.expand import expand_study
    from pathfm.ablations.study import list_studies

    refused = []
    for study in list_studies():
        for scale in SCALES:
            plan = expand_study(study, scale, overrides={"data.slides": "samples/wsi"})
            workers, gpu = int(plan.resources.get("workers", 1)), plan.resources.get("gpu", 0) > 0
            for arm in plan.arms:
                cfg = plan.arm_config(arm.name)
                try:
                    startup_checks(cfg, workers, "cuda" if gpu and cfg.run.device != "cpu" else "cpu")
                except ConfigError as e:
                    refused.append(f"{study.study} at {scale}, arm {arm.name}: {e}")
    assert not refused, "\n".join(refused[:10])
