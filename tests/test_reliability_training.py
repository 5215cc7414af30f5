"""Faults under a single training run on the bundled real slides: slides deleted or corrupted while the run
reads them, a disk that fills up mid-run, and storage paths that cannot be written (for root too)."""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pathfm.backbone import checkpoint as ckpt
from pathfm.config import load_config
from pathfm.errors import PathfmError
from pathfm.io import read_jsonl
from pathfm.ssl.trainer import train

TINY = ["data.batch_size=4", "data.crops.n_local=2", "run.progress=false", "optim.warmup_steps=1",
        "optim.teacher_temp_warmup_steps=2", "optim.freeze_last_layer_steps=1"]


class AtStep:
    """Trainer callback running ``action`` once, right after step ``step`` was logged."""

    def __init__(self, step: int, action):
        self.step, self.action, self.done = step, action, False

    def on_log(self, rec: dict) -> None:
        if rec["step"] == self.step and not self.done:
            self.done = True
            self.action()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slides_deleted_or_corrupted_mid_training_are_skipped_and_counted(tmp_path: Path, cmu_slide: Path):
    slides = tmp_path / "slides"
    slides.mkdir()
    names = ["a.svs", "b.svs", "c.svs"]  # three copies of a real slide, each its own slide id
    for n in names:
        shutil.copy(cmu_slide, slides / n)
    cfg = load_config("smoke", TINY + [f"data.slides={slides}", "optim.steps=8", "run.checkpoint_every=4"])

    def break_slides() -> None:
        (slides / "a.svs").unlink()  # deleted: an open handle keeps reading it (POSIX), a new open fails
        size = (slides / "b.svs").stat().st_size
        with open(slides / "b.svs", "r+b") as f:  # corrupted in place (same inode, every byte zeroed)
            f.write(b"\0" * size)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, tmp_path / "run", callbacks=[AtStep(2, break_slides)])
    assert result.final_step == 8 and (tmp_path / "run" / "DONE").exists()  # not fatal
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert all(r["slides_skipped"] == 0 for r in recs[:2])
    assert recs[-1]["slides_skipped"] >= 1  # counted, in the run's own metrics
    dropped = [str(w.message) for w in caught if "dropped from sampling" in str(w.message)]
    assert any("b.svs" in m and "unreadable" in m for m in dropped), dropped
    # the counter survives a resume (it lives in the checkpoint)
    state = ckpt.latest_valid(tmp_path / "run")[1]
    assert state["progress"]["slides_skipped"] == recs[-1]["slides_skipped"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_disk_full_mid_run_fails_clearly_and_the_run_resumes_from_the_last_good_checkpoint(tmp_path: Path):
    """RLIMIT_FSIZE makes writes past the limit fail with EFBIG, the same path as ENOSPC on a full disk;
    unlike chmod it stops root too. The limit is set after the first checkpoint (step 2), so the
    checkpoint of step 4 is the first write that cannot complete."""
    cfg = load_config("smoke", TINY + ["optim.steps=6", "run.checkpoint_every=2"])
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us

    def fill_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, old_limit[1]))

    try:
        with pytest.raises(ckpt.CheckpointError) as e:
            train(cfg, tmp_path / "run", callbacks=[AtStep(3, fill_disk)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(e.value)
    assert "step_00000004.pt" in msg and "disk full" in msg and "resume" in msg and "step_00000002.pt" in msg
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]  # nothing half-written kept
    assert ckpt.verify(ckpt.checkpoint_path(tmp_path / "run", 2)) is None
    assert not [p for p in (tmp_path / "run").rglob(".*.tmp")]
    # space freed: the run continues from step 2 and finishes
    resumed = train(cfg, tmp_path / "run", resume=True)
    assert resumed.final_step == 6
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 7))


@pytest.fixture
def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "plain_file").write_text("not a folder\n")
    return tmp_path / "plain_file" / "runs"


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_run_dir_fails_before_any_work(where, under_a_file: Path):
    run_dir = under_a_file if where == "under_a_file" else Path("/proc/pathfm_reliability/run")
    cfg = load_config("smoke", TINY)
    t0 = time.perf_counter()
    with pytest.raises(PathfmError, match=r"run directory '.*' is not writable .*choose a folder"):
        train(cfg, run_dir)
    assert time.perf_counter() - t0 < 2.0  # nothing was built or read first


def test_unwritable_sweep_storage_fails_before_ray_starts(under_a_file: Path):
    import ray

    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    spec = spec_from_dict({"name": "nowhere", "overrides": {"data.assume_mpp": 0.5, "optim.steps": 2},
                           "eval": {"enabled": False}, "objective": {"metric": "loss", "mode": "min"}})
    with pytest.raises(PathfmError, match=r"sweep storage \(--storage\) '.*plain_file/runs' is not writable"):
        run_sweep(spec, storage=under_a_file, verbose=0)
    assert not ray.is_initialized()


@pytest.mark.timeout(120)
def test_cli_reports_unwritable_storage_without_a_traceback(tmp_path: Path, repo_root: Path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: nowhere\noverrides: {data.assume_mpp: 0.5, optim.steps: 2}\neval: {enabled: false}\n"
                    "objective: {metric: loss, mode: min}\n")
    res = subprocess.run([sys.executable, "-m", "pathfm.cli", "sweep", "run", str(spec), "--storage",
                          "/proc/pathfm_reliability"], capture_output=True, text=True, timeout=120, cwd=repo_root)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "not writable" in res.stderr and "Traceback" not in res.stderr
