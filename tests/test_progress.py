"""Progress output: tqdm's bar on a terminal; in a log (not a terminal) a plain line every N steps, never an
update per step or a carriage-return bar."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from tqdm import tqdm

from pathfm.progress import LineProgress, progress_bar, run_with_heartbeat


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_n_steps_with_the_postfix():
    log = io.StringIO()
    bar = progress_bar(total=1000, initial=0, desc="train", unit="step", file=log)
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{i:.1f}")  # the trainer sets one every step
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 20 <= len(lines) <= 23  # the start, one per 50 steps, the end
    assert lines[-1].startswith("train: 100%") and "1000/1000" in lines[-1] and "loss=999.0" in lines[-1]
    every = progress_bar(range(10), every=5, desc="x", file=io.StringIO(), leave=False)
    assert list(every) == list(range(10)) and "10/10" in every.fp.getvalue().splitlines()[-1]


def test_a_terminal_keeps_tqdms_bar():
    bar = progress_bar(total=3, file=_Terminal())
    assert isinstance(bar, tqdm) and not isinstance(bar, LineProgress)
    bar.close()


def test_feature_extraction_progress_in_a_log_is_a_few_lines(capsys):
    from pathfm.eval.features import extract_features

    model = torch.nn.Sequential()  # any module: features are not the point here
    model.forward_features = lambda x: {"cls": x.mean(dim=(2, 3)), "patch": x.flatten(2).transpose(1, 2)}
    images = np.zeros((200, 14, 14, 3), dtype=np.uint8)
    extract_features(model, images, batch_size=2, progress=True, device="cpu", desc="feats")
    err = capsys.readouterr().err  # captured: not a terminal, as in a SLURM or Ray log
    assert "\r" not in err and 2 <= len(err.splitlines()) <= 23 and "100/100" in err


def test_a_disabled_bar_in_a_log_iterates_and_writes_nothing():
    import io

    from pathfm.progress import progress_bar

    out = io.StringIO()
    assert list(progress_bar(range(5), disable=True, file=out, desc="x")) == [0, 1, 2, 3, 4]
    with progress_bar(total=3, disable=True, file=out) as bar:
        bar.update(3)
        bar.set_postfix(loss=1.0)
    assert out.getvalue() == ""


@pytest.mark.timeout(120)
def test_a_quiet_child_gets_heartbeat_lines_with_its_latest_output():
    """A real child that prints a progress bar (carriage returns) and then works silently for 2 s: a heartbeat
    line every 0.2 s names the bar's latest state; the exit code and the kept lines come back."""
    child = ("import sys, time; sys.stdout.write('loading\\n10%\\r50%\\r100%\\n'); sys.stdout.flush(); "
             "time.sleep(2); print('done'); sys.exit(3)")
    out = io.StringIO()
    code, lines = run_with_heartbeat([sys.executable, "-c", child], "child", every_s=0.2, stream=out)
    assert code == 3
    assert lines.splitlines() == ["loading", "10%", "50%", "100%", "done"]
    beats = out.getvalue().splitlines()
    assert len(beats) >= 2 and all(b.startswith("child: ") and ", last output: " in b for b in beats)
    assert any(b.endswith("last output: 100%") for b in beats)


@pytest.mark.timeout(120)
def test_a_child_past_its_timeout_is_killed():
    with pytest.raises(subprocess.TimeoutExpired):
        run_with_heartbeat([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"], "child",
                           every_s=0.1, timeout_s=0.5, stream=io.StringIO())
