"""A hung rank of a 2-worker DDP sweep trial (Ray Train, gloo on CPU) is detected and the trial retried.

    PYTHONPATH=. .venv/bin/python benchmarks/ddp_hang_check.py /tmp/ddp_hang     # ~5 min on 2 CPU cores

Rank 0 blocks after logging step 4 (``PATHFM_TEST_HANG_AT_STEP=4``); its ``run.hang_timeout_s`` watchdog
(pathfm/sweeps/hang.py) kills its process, rank 1's next collective fails at once ("Connection closed by
peer"), Ray Train fails the run, Tune retries the trial (``max_failures: 1``) from checkpoint 2, and it ends
TERMINATED at step 6 with every step logged once. Too slow for the test suite (the single-process path is
tests/test_sweeps_hang.py); exits non-zero when any of that does not hold.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["PATHFM_TEST_HANG_AT_STEP"] = "4"  # before Ray starts: its workers inherit it
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def sweep_on_local_ray(spec, out: Path) -> Path:
    """Run the sweep on a fresh 2-CPU local Ray; returns its folder."""
    import ray

    from pathfm.sweeps.runner import run_sweep

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        return run_sweep(spec, storage=out, verbose=0)
    finally:
        ray.shutdown()


def main(out: Path) -> int:
    from pathfm.io import read_jsonl
    from pathfm.sweeps.collect import read_trial, trial_dirs
    from pathfm.sweeps.spec import spec_from_dict

    spec = spec_from_dict({
        "name": "ddp_hang", "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
        "report_every": 1, "max_failures": 1, "resources": {"cpu": 0.5, "workers": 2},
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 6, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                      "data.batch_size": 2, "data.crops.n_local": 2, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256, "run.hang_timeout_s": 5, "run.collective_timeout_s": 60},
    })
    t0 = time.time()
    sweep_dir = sweep_on_local_ray(spec, out)
    trial_dir = trial_dirs(sweep_dir)[0]
    info = read_trial(trial_dir)
    expected = {"status": "TERMINATED", "final_step": 6, "attempts": 2, "hangs": 1, "restored_from_step": 2}
    got = {k: info.get(k) for k in expected}
    got["steps"] = [r["step"] for r in read_jsonl(trial_dir / "metrics.jsonl")]
    expected["steps"] = [1, 2, 3, 4, 5, 6]
    print(got, f"{time.time() - t0:.0f} s")
    ok = got == expected
    print("OK" if ok else f"FAILED (expected {expected})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pathfm_ddp_hang").resolve()))
