"""The function Ray Tune runs for every sweep trial, and what it is shipped with.

:func:`sweep_trainable` finds the trial its Tune config stands for
(:func:`pathfm.sweeps.search.trial_of_config`), then runs it in ``<sweep_dir>/trial_<id>``: in this
process (:func:`pathfm.sweeps.trainable.run_trial`) or, with ``resources.workers > 1``, as a Ray Train
DDP run driven from here (:func:`pathfm.sweeps.distributed.run_ddp_trial`). On an object-store sweep a
single-process trial syncs its folder with the store from its node (:func:`pathfm.infra.sweep_sync.synced_trial`). Only
``ray.tune.report / get_checkpoint / get_context`` are used (Train V2 rule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pathfm.infra.sweep_sync import synced_trial
from pathfm.records import SweepFolder
from pathfm.sweeps.search import trial_of_config
from pathfm.sweeps.spec import SweepSpec
from pathfm.sweeps.trainable import run_trial


@dataclass
class SweepContext:
    """What every trial needs besides its Tune config (shipped once via ``tune.with_parameters``)."""

    spec: SweepSpec
    sweep_dir: str  # absolute local path (shared on clusters)
    trials: list[dict] = field(default_factory=list)  # expanded trials (grid/random); placeholders for optuna
    configs: list[Any] = field(default_factory=list)  # their training Configs as the driver built them (grid/random)
    store: Any = None  # object-store sweeps: the sweep folder's RemoteStorage (pathfm.infra.object_store); None: local

    def trial_for(self, config: dict, trial_id: str = "") -> dict:
        return trial_of_config(self.spec, self.trials, config, trial_id)

    def config_for(self, trial: dict) -> Any:
        """The trial's Config built by the driver (None: build it here: an adaptive search's or a resumed sweep's)."""
        index = trial.get("index")
        if not self.configs or not trial.get("sampled") or self.spec.search.algorithm == "optuna" or index is None:
            return None
        return self.configs[index]


def sweep_trainable(config: dict, ctx: SweepContext) -> None:
    """The function Tune runs for every trial (wrapped with ``tune.with_parameters(..., ctx=...)``)."""
    import ray
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    trial = ctx.trial_for(config, trial_id)
    run_dir = SweepFolder(ctx.sweep_dir).trial_dir(trial_id)
    node_id = ray.get_runtime_context().get_node_id()
    if ctx.spec.resources.workers > 1:
        from pathfm.sweeps.distributed import run_ddp_trial

        run_ddp_trial(ctx.spec, trial, run_dir, trial_id=trial_id, node_id=node_id)
        return
    on_store = ctx.store is not None  # an object-store sweep: no Ray checkpoints (metrics_only)
    with synced_trial(run_dir, ctx.store) as sync_callbacks:
        run_trial(ctx.spec, trial, run_dir, trial_id=trial_id, sweep=ctx.spec.name,
                  report=metrics_only(tune.report) if on_store else tune.report, tune_checkpoint=tune.get_checkpoint(),
                  copy_checkpoints=copy_checkpoints() and not on_store, node_id=node_id, cfg=ctx.config_for(trial),
                  callbacks=sync_callbacks)


def metrics_only(report: Callable[..., None]) -> Callable[..., None]:
    """``report`` without Ray checkpoints, for object-store sweeps: there the trial folder in the store is the
    checkpoint a restarted trial resumes from (:mod:`pathfm.infra.sweep_sync`), and Ray's own checkpoint
    upload would need its ``storage_path`` (the driver's staging folder) on every node: Ray refuses a
    checkpoint from a node without it."""

    def report_metrics(metrics: dict, checkpoint: Any = None) -> None:
        report(metrics)

    return report_metrics


def copy_checkpoints() -> bool:
    """Copy checkpoints into Ray's checkpoint when the trial folder may not be visible to every node
    (``PATHFM_SWEEP_COPY_CHECKPOINTS=1``)."""
    return os.environ.get("PATHFM_SWEEP_COPY_CHECKPOINTS", "0") == "1"
