"""Fault injection for the resilience tests: real exceptions inside real sweep trials (test support, not pathfm).

Off unless the environment variable ``PATHFM_TEST_FAULTS`` names a JSON file holding a list of rules; nothing
of it is in the sweep spec. pathfm runs :func:`fault_callbacks` in every trial through its generic hook for
extra trainer callbacks (``PATHFM_TRIAL_CALLBACKS=fault_injection:fault_callbacks``,
:func:`pathfm.sweeps.trainable.extra_trial_callbacks`); :func:`fault_environment` gives the variables that turn
it on. A trial worker reads the rules file once, when the trial starts, and only a trial that a rule matches
gets the extra trainer callback, so the reporter's per-step path is untouched. A rule::

    {"when": {"kde_weight": 0.01}, "at_step": 2, "times": 1}

``when`` matches the trial's params, ``arm``, ``seed`` and ``index``; the trial raises ``RuntimeError`` at
training step ``at_step`` in at most ``times`` attempts (counted in the trial folder), so ``times: 1`` with
``max_failures >= 1`` tests restart-from-checkpoint and the default (unlimited) tests an errored trial.
With ``"hang": true`` the trial blocks for ever instead, in its first attempt only (a marker file in the trial
folder records the step): after logging step ``at_step``, or with ``at_step: 0`` when the attempt starts,
before training (the hang watchdog, ``run.hang_timeout_s``, has started by then and beats before it).
Ray workers inherit the variables (and ``PYTHONPATH``, which must name this folder for them to import this
module) from the process that started Ray: set them before ``ray.init``; the rules file may be written later,
up to the start of the trials.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pathfm.records import RunFolder

ENV_VAR = "PATHFM_TEST_FAULTS"
HOOK = f"{Path(__file__).stem}:fault_callbacks"  # for PATHFM_TRIAL_CALLBACKS
TESTS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FaultRule:
    when: dict[str, Any] = field(default_factory=dict)
    at_step: int = 1
    times: int = 1_000_000
    hang: bool = False


def load_rules(environ: Mapping[str, str] = os.environ) -> list[FaultRule]:
    """The rules in the file ``$PATHFM_TEST_FAULTS`` names (none: the variable is unset or the file absent)."""
    path = environ.get(ENV_VAR)
    if not path or not Path(path).exists():
        return []
    return [FaultRule(**rule) for rule in json.loads(Path(path).read_text())]


def matching_rule(rules: list[FaultRule], trial: dict) -> FaultRule | None:
    """The first rule whose ``when`` matches the trial's params / arm / seed / index (None: no fault)."""
    keys = dict(trial.get("params") or {}, arm=trial.get("arm"), seed=trial.get("seed"), index=trial.get("index"))
    return next((r for r in rules if all(k in keys and keys[k] == v for k, v in r.when.items())), None)


class FaultInjector:
    """Trainer callback that raises at ``rule.at_step``, at most ``rule.times`` times per trial folder."""

    def __init__(self, rule: FaultRule, run_dir: Path):
        self.rule, self.counter = rule, RunFolder(run_dir).injected_failures

    def on_log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        if step != self.rule.at_step:
            return
        n = int(self.counter.read_text()) if self.counter.exists() else 0
        if n >= self.rule.times:
            return
        self.counter.write_text(str(n + 1))
        raise RuntimeError(f"injected failure at step {step} ({ENV_VAR}, attempt {n + 1} of {self.rule.times})")


def block_once(run_dir: Path, step: int) -> None:
    """Block for ever, unless an earlier attempt of this trial did (then return at once)."""
    marker = RunFolder(run_dir).test_hang_marker
    if marker.exists():
        return
    marker.write_text(str(step))
    while True:
        time.sleep(3600)


class HangInjector:
    """Trainer callback that blocks after step ``rule.at_step`` is logged, in the trial's first attempt."""

    def __init__(self, rule: FaultRule, run_dir: Path):
        self.rule, self.run_dir = rule, run_dir

    def on_log(self, record: dict) -> None:
        if int(record.get("step", 0)) == self.rule.at_step:
            block_once(self.run_dir, self.rule.at_step)


def fault_callbacks(trial: dict, run_dir: Path) -> list:
    """``[FaultInjector]`` or ``[HangInjector]`` for a trial a test rule matches, else ``[]`` (the normal case);
    a hang rule at step 0 blocks here, when the attempt starts."""
    rule = matching_rule(load_rules(), trial)
    if rule is None:
        return []
    if not rule.hang:
        return [FaultInjector(rule, run_dir)]
    if rule.at_step == 0:
        block_once(run_dir, 0)
    return [HangInjector(rule, run_dir)]


def fault_environment(rules: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment variables that inject the faults of the rules file ``rules`` into every sweep trial of a
    process (and of the Ray workers it starts): the rules file, pathfm's trial-callback hook naming
    :func:`fault_callbacks`, and ``PYTHONPATH`` with this folder first (the current value kept after it)."""
    from pathfm.sweeps.trainable import TRIAL_CALLBACKS_ENV

    path = os.pathsep.join(p for p in (str(TESTS_DIR), environ.get("PYTHONPATH", "")) if p)
    return {ENV_VAR: str(rules), TRIAL_CALLBACKS_ENV: HOOK, "PYTHONPATH": path}
