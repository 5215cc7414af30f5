"""Search and scheduling from the spec: Tune parameter space, search algorithm, ASHA.

* grid / random: the trials are expanded up front (:func:`pathfm.sweeps.spec.expand_trials`, random
  draws seeded by ``search.seed``) and Tune's basic variant generator runs ``grid_search`` over the
  trial indices, so every trial config was validated before launch and a restore never re-samples.
* optuna: ``ray.tune.search.optuna.OptunaSearch`` (TPE, seeded) over the space; arms and replicate
  seeds (if more than one) are categorical dimensions. Its state is saved with the experiment and
  restored by ``pathfm sweep resume``.
* ASHA (``scheduler.type: asha``) on an in-training metric, ``time_attr=training_iteration`` (one unit
  per report, i.e. every ``report_every`` steps).
"""

from __future__ import annotations

import math
from typing import Any

from pathfm.sweeps.spec import Distribution, SweepSpec, optuna_categories


def tune_domain(d: Distribution) -> Any:
    """A spec distribution as a Ray Tune domain (for adaptive searchers)."""
    from ray import tune

    k = d.kind
    if k in ("choice", "grid"):
        return tune.choice(d.values())
    if k == "uniform":
        return tune.uniform(*d.uniform)
    if k == "loguniform":
        return tune.loguniform(*d.loguniform)
    if k == "int":
        lo, hi = d.int_
        return tune.lograndint(lo, hi + 1) if d.log else tune.randint(lo, hi + 1)
    return d.constant


def param_space(spec: SweepSpec, n_trials: int) -> dict[str, Any]:
    from ray import tune

    if spec.search.algorithm != "optuna":
        return {"index": tune.grid_search(list(range(n_trials)))}
    space: dict[str, Any] = {name: tune_domain(d) for name, d in spec.space.items()}
    for name, values in optuna_categories(spec).items():
        space[name] = tune.choice(values)
    return space


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


def search_algorithm(spec: SweepSpec) -> Any:
    """The Tune searcher for the spec (None: Tune's default basic variant generator)."""
    if spec.search.algorithm != "optuna":
        return None
    import optuna

    cls = _optuna_search_class()
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    return cls(metric=spec.objective.metric, mode=spec.objective.mode, sampler=sampler)


def n_reports(total_steps: int, report_every: int) -> int:
    """Reports a full trial makes: one per ``report_every`` steps plus the final one."""
    return math.floor(total_steps / report_every) + 1


def scheduler(spec: SweepSpec, total_steps: int) -> Any:
    if spec.scheduler.type != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    metric, mode = spec.scheduler_metric()
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=metric,
        mode=mode,
        max_t=n_reports(total_steps, spec.report_every) + 1,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )
