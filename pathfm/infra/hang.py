"""Hung-trial watchdog: a trial whose training makes no progress for ``run.hang_timeout_s`` is killed, so
the sweep retries it from its last checkpoint.

Progress is the trainer's own heartbeat: every logged step (``on_log``) and every checkpoint
(``on_checkpoint``) resets the clock. Start-up (model building, slide validation, the DDP model wrap that
waits for every rank, a first step that compiles kernels) gets its own, longer allowance,
``run.startup_timeout_s`` (null: :data:`STARTUP_FACTOR` x ``run.hang_timeout_s``), counted from the start of
the trial's attempt to its first heartbeat; after that, ``run.hang_timeout_s`` applies. A hang (a dead
data-loader worker, a wedged file system, a collective that never returns, a deadlock in a C extension)
usually blocks the training thread where Python cannot interrupt it, so the watchdog thread records the hang
in ``trial.json`` (``hangs``, ``last_hang``) and then SIGKILLs its own process: under Ray Tune the trial's
actor dies, Tune counts a failure and, within ``max_failures`` of the sweep spec, restarts the trial, which
resumes from its newest valid checkpoint (:func:`pathfm.sweeps.trainable.resume_point`); with
``max_failures: 0`` the trial ends ERROR (:func:`no_retry_warning` says so when the sweep starts). Under
``pathfm sweep optuna`` the worker process dies, its heartbeat goes stale and the trial is retried like any
dead worker's (that path is not tested with a hang). Set the timeout above the longest quiet stretch of a
healthy run: ``run.log_every`` steps plus a checkpoint save plus an in-training probe.

In a DDP trial the watchdog runs on rank 0 (the trainer's callbacks run there); a rank that hangs stops
rank 0 too, at its next collective, so rank 0's watchdog fires and the other ranks' collectives fail.

The suite makes real hangs through its fault injection (tests/fault_injection.py, a rule with ``hang``): the
watchdog runs first among a trial's trainer callbacks, so a callback after it that blocks at step N leaves
step N as the last heartbeat.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

STARTUP_FACTOR = 3.0  # run.startup_timeout_s: null -> this x run.hang_timeout_s


def startup_allowance(hang_timeout_s: float, startup_timeout_s: float | None) -> float:
    """Seconds from a trial attempt's start to its first heartbeat before it counts as hung."""
    return float(startup_timeout_s) if startup_timeout_s is not None else STARTUP_FACTOR * float(hang_timeout_s)


def hang_message(timeout_s: float, last_step: int | None, quiet_s: float, startup_s: float | None = None) -> str:
    """The text recorded for a hang (names the knob to change). ``last_step`` None: no heartbeat yet
    (``startup_s``: the start-up allowance that ran out)."""
    if last_step is None:
        return (f"no first training step within {quiet_s:.0f} s of the trial's start (run.startup_timeout_s="
                f"{startup_s:g}); the trial process was killed to be retried. Raise run.startup_timeout_s if "
                "model building, slide checks and a first step take that long")
    return (f"no training progress for {quiet_s:.0f} s after step {last_step} (run.hang_timeout_s={timeout_s:g}); "
            "the trial process was killed to be retried from its last checkpoint. Raise run.hang_timeout_s if a "
            "healthy step, checkpoint or probe takes that long")


def no_retry_warning(max_failures: int, hang_timeouts: list[float | None]) -> str | None:
    """One line for a sweep whose trials have a hang watchdog but no retries (None when that is not so)."""
    if max_failures != 0 or not any(t is not None for t in hang_timeouts):
        return None
    return ("run.hang_timeout_s is set but the sweep's max_failures is 0: the watchdog will kill a hung trial "
            "and it will end ERROR; set max_failures >= 1 to retry it from its last checkpoint")


class HangWatchdog:
    """Trainer callback + daemon thread (see the module docstring). ``on_hang(message)`` runs before the kill;
    ``kill`` is ``os.kill(own pid, SIGKILL)`` unless a test passes another action. ``startup_s``: the
    allowance before the first heartbeat (None: start-up is not watched)."""

    def __init__(self, timeout_s: float, on_hang: Callable[[str], None],
                 kill: Callable[[], None] | None = None, poll_s: float | None = None,
                 startup_s: float | None = None):
        self.timeout_s = float(timeout_s)
        self.startup_s = float(startup_s) if startup_s is not None else None
        self.on_hang = on_hang
        self.kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self.poll_s = poll_s if poll_s is not None else min(5.0, max(0.1, self.timeout_s / 10))
        self.last_beat = time.monotonic()
        self.last_step: int | None = None
        self.fired = False
        self.beaten = False  # set by the first heartbeat (a logged step or a checkpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pathfm-hang-watchdog", daemon=True)

    # ------------------------------------------------------------------ trainer callback
    def on_log(self, record: dict[str, Any]) -> None:
        self.last_step = int(record.get("step", 0))
        self._beat()

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.last_step = int(step)
        self._beat()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        self.beaten = True

    # ------------------------------------------------------------------ thread
    def start(self) -> "HangWatchdog":
        """Start watching (the start-up allowance counts from here)."""
        self.last_beat = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _allowance(self) -> float | None:
        return self.timeout_s if self.beaten else self.startup_s

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            allowed = self._allowance()
            quiet = time.monotonic() - self.last_beat
            if allowed is not None and quiet > allowed:
                self.fired = True
                message = hang_message(self.timeout_s, self.last_step if self.beaten else None, quiet, self.startup_s)
                print(f"pathfm: {message}", file=sys.stderr, flush=True)
                try:
                    self.on_hang(message)
                finally:
                    self.kill()
                return

