"""The in-training probe config is ``probe:``; the old ``eval:`` key still loads, with a DeprecationWarning."""

from __future__ import annotations

import pytest
import yaml

from pathfm.config import Config, load_config
from pathfm.errors import ConfigError


def test_old_eval_section_in_a_yaml_loads_as_probe_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"base": "smoke", "eval": {"every": 7, "tasks": ["osteo"], "probe": "linear"}}))
    with pytest.warns(DeprecationWarning, match="'eval' is deprecated; use 'probe'"):
        cfg = load_config(path)
    assert (cfg.probe.every, cfg.probe.tasks, cfg.probe.probe) == (7, ["osteo"], "linear")
    assert "probe" in yaml.safe_load(cfg.to_yaml()) and "eval" not in yaml.safe_load(cfg.to_yaml())


def test_old_dotted_override_sets_the_probe_with_a_warning():
    with pytest.warns(DeprecationWarning, match="use 'probe'"):
        cfg = load_config("smoke", ["eval.every=3"])
    assert cfg.probe.every == 3
    assert load_config("smoke", ["probe.every=4"]).probe.every == 4


def test_a_saved_run_config_with_the_old_key_validates():
    with pytest.warns(DeprecationWarning, match="use 'probe'"):
        cfg = Config.model_validate({"eval": {"every": 5, "final": True}})  # 0.1 run config: eval.final dropped
    assert cfg.probe.every == 5


def test_old_and_new_key_together_is_an_error_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"eval": {"every": 1}, "probe": {"every": 2}}))
    with pytest.raises(ConfigError, match="both 'eval'.*'probe'"):
        load_config(path)
