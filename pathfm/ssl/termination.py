"""SIGTERM during training: the step finishes, a checkpoint of it is saved, and training stops saying so.

Ray, SLURM and Kubernetes send SIGTERM before they kill a job. While :class:`SigtermFlag` is active, the signal
only sets a flag; the trainer checks it after every optimizer step (:func:`agreed`: every rank of a distributed
run at once, so that all of them enter the checkpoint save together), saves a checkpoint of that step and
raises :class:`pathfm.errors.TrainingInterrupted`. A second SIGTERM ends the process at once, as it would have
without pathfm. Python installs signal handlers only in the main thread: in a Ray Tune trial's thread the flag
stays off and Ray's own stop handling applies (a trial resumes from its last checkpoint).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import torch

from pathfm.ssl.distributed import DistEnv, all_reduce_sum


class SigtermFlag:
    """A context manager: inside it, SIGTERM sets :attr:`received` (the previous handler is restored on exit)."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "SigtermFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # the second one: what SIGTERM does without this handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.received = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def agreed(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every rank when any rank's ``flag`` is set (one all-reduce in a distributed run)."""
    if not env.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    all_reduce_sum(t)
    return bool(t.item() > 0)
