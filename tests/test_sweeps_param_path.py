"""A searched knob's path from the sweep spec to the trial's Config: the alias is resolved once (when the spec
is loaded) and each trial's Config is built once (by the driver, then shipped to the trial)."""

from __future__ import annotations

import pickle

from pathfm.sweeps.spec import expand_trials, spec_from_dict, trial_configs, validate_trial
from pathfm.sweeps.trainable import trial_config
from pathfm.sweeps.tune_entry import SweepContext


def _spec(**kw):
    return spec_from_dict({"name": "path", "space": {"hed_strength": {"grid": [0.0, 0.05]}},
                           "eval": {"enabled": False}, **kw})


def test_the_alias_is_resolved_at_load_and_trials_carry_dotted_paths():
    spec = _spec()
    assert spec.__pydantic_private__["_dotted"]["hed_strength"] == "data.hed.strength"  # resolved by spec_from_dict
    trials = expand_trials(spec, validate=False)
    assert [t["overrides"]["data.hed.strength"] for t in trials] == [0.0, 0.05]
    assert all("hed_strength" not in t["overrides"] for t in trials)
    shipped = pickle.loads(pickle.dumps(spec))  # what a trial process receives
    assert shipped.__pydantic_private__["_dotted"] == spec.__pydantic_private__["_dotted"]


def test_a_trial_uses_the_config_the_driver_built_without_changing_it():
    spec = _spec()
    trials = expand_trials(spec, validate=False)
    configs = trial_configs(spec, trials)
    assert [c.data.hed.strength for c in configs] == [0.0, 0.05]
    ctx = pickle.loads(pickle.dumps(SweepContext(spec=spec, sweep_dir="/tmp", trials=trials, configs=configs)))
    built = ctx.config_for(trials[1])
    assert built == validate_trial(spec, trials[1])
    used = trial_config(ctx.spec, trials[1], cfg=built)
    assert used == trial_config(spec, trials[1])  # the same Config as one built in the trial
    assert built.run.progress is True and used.run.progress is False  # the sweep's settings go on a copy


def test_an_adaptive_search_builds_its_configs_in_the_trial():
    spec = _spec(space={"hed_strength": {"uniform": [0.0, 0.1]}}, search={"algorithm": "optuna", "num_samples": 2})
    trials = expand_trials(spec, validate=False)
    assert trial_configs(spec, trials) == []  # validated at the bounds instead
    assert SweepContext(spec=spec, sweep_dir="/tmp", trials=trials).config_for(trials[0]) is None
