"""Hung-trial watchdog: a trial whose training makes no progress for ``run.hang_timeout_s`` is killed, so
the sweep retries it from its last checkpoint.

Progress is the trainer's own heartbeat: every logged step (``on_log``) and every checkpoint
(``on_checkpoint``) resets the clock. The clock starts at the first logged step: start-up (model building,
slide validation, a first step that compiles kernels) varies too much between machines to share the
timeout, so a hang before the first logged step is left to ``run.collective_timeout_s`` and Tune. A hang (a dead data-loader worker, a wedged file system, a collective
that never returns, a deadlock in a C extension) usually blocks the training thread where Python cannot
interrupt it, so the watchdog thread records the hang in ``trial.json`` (``hangs``, ``last_hang``) and then
SIGKILLs its own process: under Ray Tune the trial's actor dies, Tune counts a failure and, within
``max_failures`` of the sweep spec, restarts the trial, which resumes from its newest valid checkpoint
(:func:`pathfm.sweeps.trainable.resume_point`); under ``pathfm sweep optuna`` the worker process dies, its
heartbeat goes stale and the trial is retried like any dead worker's (that path is not tested with a hang). Set the timeout above the longest quiet stretch of a healthy
run: ``run.log_every`` steps plus a checkpoint save plus an in-training probe.

For tests, ``PATHFM_TEST_HANG_AT_STEP=N`` makes the first attempt of every trial block after logging step N
(a marker file in the trial folder keeps later attempts from blocking again).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

TEST_HANG_ENV = "PATHFM_TEST_HANG_AT_STEP"
TEST_HANG_MARKER = ".test_hang_done"


def hang_message(timeout_s: float, last_step: int, quiet_s: float) -> str:
    """The text recorded for a hang (names the knob to change)."""
    where = f"after step {last_step}"
    return (f"no training progress for {quiet_s:.0f} s {where} (run.hang_timeout_s={timeout_s:g}); the trial process "
            "was killed to be retried from its last checkpoint. Raise run.hang_timeout_s if a healthy step, "
            "checkpoint or probe takes that long")


class HangWatchdog:
    """Trainer callback + daemon thread (see the module docstring). ``on_hang(message)`` runs before the kill;
    ``kill`` is ``os.kill(own pid, SIGKILL)`` unless a test passes another action."""

    def __init__(self, timeout_s: float, run_dir: Path, on_hang: Callable[[str], None],
                 kill: Callable[[], None] | None = None, poll_s: float | None = None):
        self.timeout_s = float(timeout_s)
        self.run_dir = Path(run_dir)
        self.on_hang = on_hang
        self.kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self.poll_s = poll_s if poll_s is not None else min(5.0, max(0.1, self.timeout_s / 10))
        self.last_beat = time.monotonic()
        self.last_step: int | None = None
        self.fired = False
        self.armed = False  # set by the first logged step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pathfm-hang-watchdog", daemon=True)

    # ------------------------------------------------------------------ trainer callback
    def on_log(self, record: dict) -> None:
        self.last_step = int(record.get("step", 0))
        self.last_beat = time.monotonic()
        self.armed = True
        block_for_test(self.last_step, self.run_dir)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.last_beat = time.monotonic()

    # ------------------------------------------------------------------ thread
    def start(self) -> "HangWatchdog":
        self.last_beat = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            quiet = time.monotonic() - self.last_beat
            if self.armed and quiet > self.timeout_s:
                self.fired = True
                message = hang_message(self.timeout_s, self.last_step or 0, quiet)
                print(f"pathfm: {message}", file=sys.stderr, flush=True)
                try:
                    self.on_hang(message)
                finally:
                    self.kill()
                return


def block_for_test(step: int, run_dir: Path) -> None:
    """``PATHFM_TEST_HANG_AT_STEP=N``: block forever after step N, once per trial folder (tests only)."""
    at = os.environ.get(TEST_HANG_ENV)
    if not at or int(at) != step:
        return
    marker = Path(run_dir) / TEST_HANG_MARKER
    if marker.exists():
        return
    marker.write_text(str(step))
    while True:
        time.sleep(3600)
