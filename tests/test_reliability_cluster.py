"""A worker node of a real 2-node Ray cluster (``ray.cluster_utils.Cluster``) dies mid-sweep: the trial it
was running is rescheduled on the remaining node, continues from its last checkpoint and finishes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pathfm.io import read_jsonl
from pathfm.records import SweepFolder, read_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 12


def _trial_pids(trial_dir_name: str) -> list[int]:
    """Ray worker processes running this trial (Tune runs a trial actor in ``.../working_dirs/trial_<id>``)."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and Path(os.readlink(p / "cwd")).name == trial_dir_name and \
                    (p / "cmdline").read_bytes().startswith(b"ray::"):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


class NodeRemover(threading.Thread):
    """Crashes ``node`` once the trial running on it has written the checkpoint of ``at_step``: its trial
    process is SIGKILLed and the node removed (raylet killed, no graceful shutdown), as when a machine dies.
    (Removing the node alone lets an orphaned worker train on for a moment, which a dead machine cannot.)"""

    def __init__(self, cluster, node, sweep_dir: Path, at_step: int):
        super().__init__(daemon=True)
        self.cluster, self.node, self.sweep_dir, self.at_step = cluster, node, sweep_dir, at_step
        self.removed: dict | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            for d in SweepFolder(self.sweep_dir).trial_dirs() if self.sweep_dir.exists() else []:
                info = read_trial(d) or {}
                if info.get("node_id") != self.node.node_id:
                    continue
                if (d / "DONE").exists():
                    self.error = "the trial on the worker node finished before the node was removed"
                    return
                if (d / "checkpoints" / f"step_{self.at_step:08d}.pt.sha256").exists():
                    for pid in _trial_pids(d.name):
                        os.kill(pid, signal.SIGKILL)
                    self.cluster.remove_node(self.node, allow_graceful=False)
                    steps = [r["step"] for r in read_jsonl(d / "metrics.jsonl")]
                    self.removed = {"trial_id": info["trial_id"], "last_logged_step": max(steps, default=0)}
                    return
            time.sleep(0.05)
        self.error = "timed out waiting for a trial on the worker node to checkpoint"


def test_trial_of_a_removed_node_is_rescheduled_and_finishes(tmp_path: Path):
    import ray
    from ray.cluster_utils import Cluster

    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import spec_from_dict

    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 128 * 2**20, "include_dashboard": False,
        "_system_config": fast_failure_detection})
    worker = cluster.add_node(num_cpus=1, object_store_memory=128 * 2**20)
    head_id = cluster.head_node.node_id
    spec = spec_from_dict({
        "name": "node_loss",
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": STEPS, "optim.warmup_steps": 1,
                      "run.checkpoint_every": 2, "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256},
        "space": {"kde_weight": {"grid": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
        "max_failures": 2,
    })
    remover = NodeRemover(cluster, worker, tmp_path / "node_loss", at_step=4)
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        remover.start()
        sweep_dir = run_sweep(spec, storage=tmp_path, verbose=0)
    finally:
        ray.shutdown()
        cluster.shutdown()
    remover.join(5)
    assert remover.error is None and remover.removed, remover.error
    infos = {i["trial_id"]: dict(i, dir=d) for d in SweepFolder(sweep_dir).trial_dirs() if (i := read_trial(d))}
    assert [i["status"] for i in infos.values()] == ["TERMINATED", "TERMINATED"], infos
    moved = infos[remover.removed["trial_id"]]
    assert moved["node_id"] == head_id  # it finished on the node that survived
    assert moved["attempts"] >= 2
    assert 4 <= moved["restored_from_step"] <= remover.removed["last_logged_step"] < STEPS, (moved, remover.removed)
    for info in infos.values():  # every step trained and logged exactly once, same final step
        assert [r["step"] for r in read_jsonl(info["dir"] / "metrics.jsonl")] == list(range(1, STEPS + 1))
        assert info["final_step"] == STEPS
    df = pl.read_parquet(sweep_dir / "results.parquet")
    assert df.group_by(["trial_id", "kind", "step", "final", "metric"]).len()["len"].max() == 1
