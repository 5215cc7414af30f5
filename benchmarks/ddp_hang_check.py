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


def main(out: Path) -> int:
    import ray

    from pathfm.io import read_jsonl
    from pathfm.sweeps.collect import read_trial, trial_dirs
    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    spec = spec_from_dict({
        "name": "ddp_hang", "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
        "report_every": 1, "max_failures": 1, "resources": {"cpu": 0.5, "workers": 2},
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 6, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                      "data.batch_size": 2, "data.crops.n_local": 2, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256, "run.hang_timeout_s": 5, "run.collective_timeout_s": 60},
    })
    t0 = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        sweep_dir = run_sweep(spec, storage=out, verbose=0)
    finally:
        ray.shutdown()
    (d,) = trial_dirs(sweep_dir)
    t = read_trial(d)
    steps = [r["step"] for r in read_jsonl(d / "metrics.jsonl")]
    print({k: t.get(k) for k in ("status", "final_step", "attempts", "hangs", "restored_from_step")},
          f"steps={steps}", f"{time.time() - t0:.0f} s")
    ok = (t["status"] == "TERMINATED" and t["final_step"] == 6 and t["attempts"] == 2 and t.get("hangs") == 1
          and t.get("restored_from_step") == 2 and steps == [1, 2, 3, 4, 5, 6])
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pathfm_ddp_hang").resolve()))
