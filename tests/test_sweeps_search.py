"""Search spaces: each distribution's translations (numpy draw, Tune domain, Optuna suggestion) and the Tune
space and points of grid/random sweeps (real Tune and Optuna objects, no Ray cluster started)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

from pathfm.sweeps.search import param_space, search_algorithm, trial_of_config, tune_point
from pathfm.sweeps.distributions import Distribution, categorical_value
from pathfm.sweeps.spec import expand_trials, spec_from_dict

BASE = {"name": "t", "overrides": {"data.assume_mpp": 0.5}}


def spec(**kw):
    return spec_from_dict({**BASE, **kw})


def test_each_distribution_translates_to_tune_and_optuna_with_its_own_bounds():
    lu = Distribution.model_validate({"loguniform": [1e-4, 1e-2]})
    dom = lu.tune_domain()
    assert isinstance(dom, Float) and (dom.lower, dom.upper) == (1e-4, 1e-2)
    draws = np.array(dom.sample(size=4000, random_state=np.random.RandomState(0)))
    assert 0.8e-3 < np.median(draws) < 1.25e-3  # log-uniform: the median is the geometric mean (uniform: ~5e-3)
    ints = Distribution.model_validate({"int": [1, 3]})
    assert isinstance(ints.tune_domain(), Integer) and (ints.tune_domain().lower, ints.tune_domain().upper) == (1, 4)
    assert set(ints.tune_domain().sample(size=300, random_state=np.random.RandomState(0))) == {1, 2, 3}  # inclusive
    lists = Distribution(grid=[[224, 98], [448, 196]])  # non-scalar values travel as their JSON text
    assert lists.tune_domain(grid=True) == {"grid_search": ["[224, 98]", "[448, 196]"]}
    assert isinstance(lists.tune_domain(), Categorical) and lists.tune_domain().categories == lists.categories()
    assert Distribution.model_validate(0.1).tune_domain() == 0.1

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(12):
        t = study.ask()
        drawn.append((lu.suggest(t, "lr"), ints.suggest(t, "n"), lists.suggest(t, "crops")))
        study.tell(t, 0.0)
    assert all(1e-4 <= a <= 1e-2 and b in (1, 2, 3) and c in ([224, 98], [448, 196]) for a, b, c in drawn)
    assert {tuple(c) for _, _, c in drawn} == {(224, 98), (448, 196)}  # decoded back to the spec's lists
    rng = np.random.default_rng(0)
    assert all(1 <= ints.sample(rng) <= 3 for _ in range(50))
    assert categorical_value({"a": 1}) == '{"a": 1}' and categorical_value(None) is None


def test_grid_space_shows_knobs_arm_and_seed_and_points_are_the_expanded_trials_in_order():
    s = spec(space={"kde_weight": {"grid": [0.0, 0.1]}, "hed_strength": 0.0},
             arms=[{"name": "base"}, {"name": "+koleo", "overrides": {"koleo_weight": 0.1}}], seeds=[0, 1],
             search={"num_samples": 2})
    trials = expand_trials(s)
    space = param_space(s)
    assert space == {"kde_weight": tune.grid_search([0.0, 0.1]), "hed_strength": 0.0,
                     "arm": tune.grid_search(["base", "+koleo"]), "seed": tune.grid_search([0, 1])}
    searcher = search_algorithm(s, trials, max_concurrent=3)
    assert searcher.max_concurrent == 3
    assert tune_point(s, trials[2]) == {"kde_weight": 0.0, "hed_strength": 0.0, "arm": "+koleo", "seed": 0}
    # every Tune config maps back to its trial; the two repeats of a point by the Tune trial counter
    for t in trials:
        assert trial_of_config(s, trials, tune_point(s, t), f"ab12c_{t['index']:05d}") is t
    assert trial_of_config(s, trials, {"index": 5}) is trials[5]  # a sweep started before Tune saw the knobs
    with pytest.raises(ValueError, match="not one of the sweep's 16 expanded trials"):
        trial_of_config(s, trials, {"kde_weight": 0.5, "hed_strength": 0.0, "arm": "base", "seed": 0}, "x_00000")


def test_random_space_has_tune_samplers_and_points_hold_the_seeded_draws():
    s = spec(space={"base_lr": {"loguniform": [1e-4, 1e-2]}, "n_slides": {"choice": [1, 2]}},
             search={"algorithm": "random", "num_samples": 3, "seed": 3}, seeds=[5, 6])
    trials = expand_trials(s)
    space = param_space(s)
    assert isinstance(space["base_lr"], Float) and isinstance(space["n_slides"], Categorical)
    assert isinstance(space["seed"], Categorical) and space["seed"].categories == [5, 6] and "arm" not in space
    points = [tune_point(s, t) for t in trials]
    assert [p["base_lr"] for p in points] == [t["params"]["base_lr"] for t in trials]
    assert [trial_of_config(s, trials, p, "")["index"] for p in points] == list(range(len(trials)))


def test_a_searched_seed_is_the_seed_knob_and_optuna_spaces_keep_their_categories():
    s = spec(space={"seed": {"grid": [3, 4]}})
    assert param_space(s) == {"seed": tune.grid_search([3, 4])}
    assert [tune_point(s, t) for t in expand_trials(s)] == [{"seed": 3}, {"seed": 4}]
    o = spec(space={"kde_weight": {"uniform": [0.0, 0.1]}}, arms=[{"name": "a"}, {"name": "b"}],
             search={"algorithm": "optuna", "num_samples": 2})
    space = param_space(o)
    assert set(space) == {"kde_weight", "arm"} and space["arm"].categories == ["a", "b"]
    t = trial_of_config(o, expand_trials(o, validate=False), {"kde_weight": 0.05, "arm": "b"}, "ab12c_00001")
    assert (t["index"], t["arm"], t["params"]) == (1, "b", {"kde_weight": 0.05})


def test_asha_judges_a_restarted_trial_at_the_rung_of_its_training_step():
    """A trial restarted without a Ray checkpoint (object-store sweeps) resumes at its step while Tune's
    training_iteration starts again at 1: ASHA must compare it with the others at the same step."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from pathfm.sweeps.search import scheduler

    s = spec(space={"kde_weight": {"grid": [0.0, 0.1]}}, report_every=2,
             scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2, "metric": "loss", "mode": "min"})
    asha = scheduler(s, total_steps=8)  # rungs at steps 2 and 4 (none at the last step)
    done, restarted = Trial("t", stub=True), Trial("t", stub=True)
    for t in (done, restarted):
        asha.on_trial_add(None, t)
    for i, (step, loss) in enumerate([(2, 9.0), (4, 1.0), (6, 1.0), (8, 1.0)], start=1):
        assert asha.on_trial_result(None, done, {"step": step, "training_iteration": i, "loss": loss}) == "CONTINUE"
    # resumed from its step-4 checkpoint: first report at step 6, Tune's first iteration of this attempt.
    # Worse than `done` was at step 4 (1.0), better than `done` was at step 2 (9.0), its first rung by iteration.
    decision = asha.on_trial_result(None, restarted, {"step": 6, "training_iteration": 1, "loss": 5.0})
    assert decision == TrialScheduler.STOP
    # a trial that trained every step is not stopped at its last report, however bad it is there (it would
    # lose its final evaluation), nor at its final (evaluation) report by max_t
    last = Trial("t", stub=True)
    asha.on_trial_add(None, last)
    for i, (step, loss) in enumerate([(2, 0.5), (4, 0.5), (6, 0.5), (8, 9.0), (8, 9.0)], start=1):
        assert asha.on_trial_result(None, last, {"step": step, "training_iteration": i, "loss": loss}) == "CONTINUE"
