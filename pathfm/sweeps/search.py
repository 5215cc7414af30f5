"""Search and scheduling from the spec: Tune parameter space, search algorithm, ASHA.

* grid / random: the trials are expanded up front (:func:`pathfm.sweeps.spec.expand_trials`, random
  draws seeded by ``search.seed``), so every trial config was validated before launch and a restore
  never re-samples. Tune gets the real parameter space (:func:`param_space`: every knob of ``space``
  as a Tune domain, ``arm`` and ``seed`` too) and Tune's basic variant generator runs exactly the
  expanded trials, in their order, as its ``points_to_evaluate`` (one Tune config per trial:
  :func:`tune_point`). Tune's ResultGrid, loggers and tools therefore see the knobs
  (``get_dataframe()`` has ``config/<knob>``, ``config/arm``, ``config/seed`` columns), and the trial
  function finds its expanded trial from its config (:func:`trial_of_config`).
* optuna: ``ray.tune.search.optuna.OptunaSearch`` (TPE, seeded) over the space; arms and replicate
  seeds (if more than one) are categorical dimensions. Its state is saved with the experiment and
  restored by ``pathfm sweep resume``.
* ASHA (``scheduler.type: asha``) on an in-training metric, ``time_attr="step"``, the trial's training
  step (its rungs are the spec's ``grace_period`` in reports times ``report_every``, times powers of the
  reduction factor, all before the trial's last step: a trial that trained every step gets its final
  evaluation). Not Tune's
  ``training_iteration``: that counts reports of the current attempt and starts again at 1 when a trial
  restarts without a Ray checkpoint (object-store sweeps, a trial resumed from a later pathfm checkpoint),
  so ASHA would judge a resumed trial at a rung behind its real step.

Each distribution translates itself (:class:`pathfm.sweeps.distributions.Distribution`: ``sample``,
``tune_domain``, ``suggest``); this module only assembles the space.
"""

from __future__ import annotations

from typing import Any

from pathfm.sweeps.distributions import categorical_value
from pathfm.sweeps.spec import SweepSpec, optuna_categories, trial_from_sample

ARM_KEY = "arm"    # the Tune config key of a trial's arm (grid/random search: when the spec has arms)
SEED_KEY = "seed"  # the Tune config key of a trial's replicate seed (or of the searched `seed` knob)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The Tune ``param_space`` of the spec: every knob of ``space`` as a Tune domain, plus ``arm`` and
    ``seed`` (grid/random: whenever the spec has arms / replicate seeds; optuna: when there are several,
    as categorical dimensions). Grid search gives discrete entries as ``tune.grid_search``."""
    from ray import tune

    grid = spec.search.algorithm == "grid"
    space: dict[str, Any] = {name: d.tune_domain(grid=grid) for name, d in spec.space.items()}
    if spec.search.algorithm == "optuna":
        for name, values in optuna_categories(spec).items():
            space[name] = tune.choice(values)
        return space
    category = tune.grid_search if grid else tune.choice
    if spec.arms:
        space[ARM_KEY] = category([a.name for a in spec.arms])
    if SEED_KEY not in spec.space:
        space[SEED_KEY] = category(list(spec.seeds))
    return space


def tune_point(spec: SweepSpec, trial: dict) -> dict[str, Any]:
    """The Tune config of an expanded grid/random trial: its knob values, ``arm`` (with arms) and ``seed``."""
    point = {k: categorical_value(v) for k, v in trial["params"].items()}
    if spec.arms:
        point[ARM_KEY] = trial["arm"]
    if SEED_KEY not in spec.space:
        point[SEED_KEY] = trial["seed"]
    return point


def trial_of_config(spec: SweepSpec, trials: list[dict], config: dict, trial_id: str = "") -> dict:
    """The trial a Tune config stands for: grid/random: the expanded trial whose :func:`tune_point` it is
    (among repeats of one point, the one whose index is the Tune trial counter, the suffix of
    ``trial_id``); optuna: built from the sampled values. Sweeps started before Tune saw the knobs
    have ``{"index": i}`` configs."""
    suffix = trial_id.rsplit("_", 1)[-1] if "_" in trial_id else ""
    counter = int(suffix) if suffix.isdigit() else None
    if trials and "index" in config and len(config) == 1:
        return trials[int(config["index"])]
    if spec.search.algorithm == "optuna" or not trials:
        return trial_from_sample(spec, counter, config)
    matches = [t for t in trials if all(config.get(k) == v for k, v in tune_point(spec, t).items())]
    if not matches:
        raise ValueError(f"Tune config {config} is not one of the sweep's {len(trials)} expanded trials")
    return next((t for t in matches if t["index"] == counter), matches[0])


def search_algorithm(spec: SweepSpec, trials: list[dict], max_concurrent: int) -> Any:
    """The Tune searcher: grid/random: a basic variant generator that runs the expanded trials in order,
    at most ``max_concurrent`` at once (Tune applies ``max_concurrent_trials`` only to other searchers);
    optuna: seeded TPE."""
    if spec.search.algorithm != "optuna":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=[tune_point(spec, t) for t in trials],
                                     max_concurrent=max_concurrent)
    import optuna

    cls = _optuna_search_class()
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    return cls(metric=spec.objective.metric, mode=spec.objective.mode, sampler=sampler)


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class PathfmOptunaSearch(OptunaSearch):
        """OptunaSearch that tolerates intermediate results without the (end-of-trial) objective:
        it only forwards results that carry the metric, and a trial stopped before reporting it is
        told to Optuna as PRUNED."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, str) and self.metric not in result:
                return
            super().on_trial_result(trial_id, result)

    return PathfmOptunaSearch


def scheduler(spec: SweepSpec, total_steps: int) -> Any:
    if spec.scheduler.type != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    metric, mode = spec.scheduler_metric()
    grace = spec.scheduler.grace_period * spec.report_every
    return ASHAScheduler(
        time_attr="step",  # every report carries it (the trainer's metrics record)
        metric=metric,
        mode=mode,
        # rungs only before the last step, and reaching max_t stops nothing: a trial that trained all its
        # steps is never stopped at its last report, before its final evaluation
        max_t=max(total_steps - 1, grace),
        stop_last_trials=False,
        grace_period=grace,
        reduction_factor=spec.scheduler.reduction_factor,
    )
