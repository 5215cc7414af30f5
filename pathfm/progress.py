"""Progress bars that suit where they are written: tqdm's bar on a terminal; in a log file or a pipe (SLURM,
Ray, ``nohup``, ``| tee``), where tqdm would write an update every tenth of a second joined by carriage
returns, one plain line every ``every`` steps (default: about twenty lines in all) and a last one at the end.
A child process that prints little for a long time (eva) gets a heartbeat line instead: :func:`run_with_heartbeat`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Iterable, Sequence

from tqdm import tqdm

LINES = 20  # lines a bar of known length writes to a log
UNKNOWN_TOTAL_EVERY = 100


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class _WholeLines:
    """A stream that passes whole lines only: tqdm's own bare "\\n" / "\\r" (after or instead of a bar, on
    closing) would add blank lines or carriage returns to a log."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class LineProgress(tqdm):
    """tqdm that writes one newline-terminated line per display and displays every ``miniters`` steps only."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not self.disable:  # a disabled tqdm sets up no stream (and never writes)
            self.fp = _WholeLines(self.fp)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # close(leave=False) clears the bar: a log has nothing to clear
            return True
        self.fp.write((msg if msg is not None else self.__str__()) + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        pass

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)  # shown with the next line, not a line itself

    def close(self) -> None:
        if not self.disable and self.leave is False and self.n != self.last_print_n:
            self.display()  # the final count even for a bar that a terminal would clear
        super().close()


def progress_bar(iterable: Iterable | None = None, *, every: int | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; else :class:`LineProgress` writing a line every ``every``
    steps (default: ``total / 20``, or 100 when the length is unknown)."""
    stream = kwargs.setdefault("file", sys.stderr)
    if _is_terminal(stream):
        from tqdm.auto import tqdm as auto

        return auto(iterable, **kwargs)
    total = kwargs.get("total")
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if every is None:
        every = max(1, -(-int(total) // LINES)) if total else UNKNOWN_TOTAL_EVERY
    return LineProgress(iterable, mininterval=0, maxinterval=float("inf"), miniters=every, dynamic_ncols=False,
                        ascii=True, **kwargs)


def run_with_heartbeat(cmd: Sequence[str], what: str, *, every_s: float = 15.0, timeout_s: float | None = None,
                       stream: Any = None, keep_lines: int = 200) -> tuple[int, str]:
    """Run ``cmd`` with its output (stdout and stderr) kept, writing ``<what>: <N> s, last output: <line>`` to
    ``stream`` (default stderr) every ``every_s`` seconds while it runs. A progress bar's carriage returns
    end lines too, so "last output" is its latest state. Returns the exit code and the last ``keep_lines``
    non-empty lines; ``subprocess.TimeoutExpired`` (the child killed) after ``timeout_s``."""
    stream = stream if stream is not None else sys.stderr
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    lines: deque[str] = deque(maxlen=keep_lines)
    ended = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # universal newlines: "\r" ends a line as "\n" does
            if line.strip():
                lines.append(line.strip())
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.monotonic()
    while not ended.wait(every_s):
        elapsed = time.monotonic() - start
        if timeout_s is not None and elapsed > timeout_s:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(list(cmd), timeout_s, output="\n".join(lines))
        last = lines[-1][:160] if lines else "(none yet)"
        print(f"{what}: {elapsed:.0f} s, last output: {last}", file=stream, flush=True)
    reader.join()
    return proc.wait(), "\n".join(lines)
