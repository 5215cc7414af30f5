"""The in-training probe may not see the final evaluation's test tiles: compared by tile file (bundled tasks on
real files), refused when a sweep is expanded, before any compute."""

from __future__ import annotations

import pytest

from pathfm.errors import ConfigError
from pathfm.eval.probe_overlap import probe_test_overlap
from pathfm.eval.tasks import get_task
from pathfm.sweeps.spec import expand_trials, spec_from_dict


def test_overlap_is_found_by_tile_file_not_by_task_name():
    n_crc = len(get_task("crc"))
    assert probe_test_overlap(["crc"], ["crc9", "osteo"]) == [("crc", "crc9", n_crc)]  # crc9 holds every crc tile
    assert probe_test_overlap(["crc"], ["osteo"]) == []
    pcam = get_task("pcam")
    assert probe_test_overlap(["pcam"], ["pcam"]) == [("pcam", "pcam", int(pcam.is_test.sum()))]  # only the test rows


def _spec(probe_tasks, eval_tasks, *, every=5, enabled=True):
    return spec_from_dict({"name": "p", "overrides": {"probe.every": every, "probe.tasks": probe_tasks},
                           "space": {"kde_weight": {"grid": [0.0, 0.1]}},
                           "eval": {"tasks": eval_tasks, "enabled": enabled}})


def test_a_sweep_whose_probe_sees_test_tiles_is_refused_before_it_starts():
    with pytest.raises(ConfigError, match=r"sweep 'p', trial 0 .*probe task 'crc' holds \d+ tiles that 'crc' tests on"):
        expand_trials(_spec(["crc"], ["crc", "osteo"]))
    assert len(expand_trials(_spec(["crc"], ["osteo"]))) == 2
    assert len(expand_trials(_spec(["crc"], ["crc"], every=0))) == 2  # no in-training probe
    assert len(expand_trials(_spec(["crc"], ["crc"], enabled=False))) == 2  # no final evaluation


def test_the_bundled_probe_task_and_the_gpu_configs_probe_disjoint_from_every_bundled_test_set():
    from pathfm.config import load_config

    assert probe_test_overlap(["pcam_train"], ["crc", "crc9", "crc_crops", "osteo", "pcam"]) == []
    for preset in ("vitb14_ablation", "midnight_vitg14"):
        cfg = load_config(preset)
        assert probe_test_overlap(cfg.probe.tasks, ["pcam", "crc9", "osteo"]) == [], preset
    # midnight_vitg14 probes nothing in training (FSDP on 2+ GPUs refuses it: tests/test_ssl_startup_checks.py)
    assert load_config("vitb14_ablation").probe.every > 0 and load_config("midnight_vitg14").probe.every == 0
