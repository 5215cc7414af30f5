"""A sweep on a real 2-node Ray cluster (ray.cluster_utils.Cluster) uses both nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ports import free_port
from pathfm.records import SweepFolder, read_trial
from pathfm.sweeps.runner import run_sweep
from pathfm.sweeps.spec import spec_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _two_trial_spec(name: str, steps: int):
    """Two tiny smoke trials (a KDE grid of two) on one bundled slide, evaluation off."""
    return spec_from_dict({
        "name": name,
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": steps, "optim.warmup_steps": 1, "data.batch_size": 4,
                      "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256},
        "space": {"kde_weight": {"grid": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
    })


def test_sweep_spreads_trials_over_two_nodes(tmp_path: Path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 128 * 2**20,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=128 * 2**20)
    try:
        spec = _two_trial_spec("two_nodes", steps=3)
        sweep_dir = run_sweep(spec, storage=tmp_path, address=cluster.address, verbose=0)
        infos = [read_trial(d) for d in SweepFolder(sweep_dir).trial_dirs()]
        assert [i["status"] for i in infos] == ["TERMINATED", "TERMINATED"]
        assert len({i["node_id"] for i in infos}) == 2  # one trial per 1-CPU node
    finally:
        ray.shutdown()
        cluster.shutdown()


HEAD_NODE = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 128 * 2**20,
                                                        "include_dashboard": False, "ray_client_server_port": int(sys.argv[1])})
print("LOGS", cluster.head_node.get_logs_dir_path(), flush=True)
sys.stdin.read()  # runs until the test closes our stdin
cluster.shutdown()
"""


def test_sweep_through_a_ray_client_address(tmp_path: Path):
    """`--address ray://HOST:PORT` (Ray Client, the `client` extra) against a real head node that runs the
    Ray Client server; the driver's Tuner runs on the cluster and the trial folders are written as usual.

    The head node runs in its own process, as `ray start --head` would: started from inside the pytest
    process, its Ray Client proxy's per-client server exited at once in 3 of 4 runs alone and in the full
    suite even with pytest's capture off (measured). In its own process it still failed once in a full
    suite run, with the same error on the first connection, and once more in a suite run beside two CPU-burning
    processes with another failure of the session's start; ``connect`` retries every "Initialization failure
    from server" (``CLIENT_SERVER_ATTEMPTS``)."""
    pytest.importorskip("grpc", reason="Ray Client needs the `client` extra: pip install -e '.[client]'")
    import subprocess
    import sys
    import time

    import ray

    port = free_port()
    out, err = tmp_path / "head.out", tmp_path / "head.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        head = subprocess.Popen([sys.executable, "-c", HEAD_NODE, str(port)], stdin=subprocess.PIPE,
                                stdout=fo, stderr=fe, text=True)
    try:
        deadline = time.monotonic() + 120
        while not out.read_text().startswith("LOGS "):
            assert head.poll() is None and time.monotonic() < deadline, err.read_text()[-4000:]
            time.sleep(0.5)
        logs_dir = Path(out.read_text().split()[1])
        spec = _two_trial_spec("via_client", steps=2)
        try:
            sweep_dir = run_sweep(spec, storage=tmp_path / "sweeps", address=f"ray://127.0.0.1:{port}", verbose=0)
        except Exception:
            print("\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(logs_dir.glob("ray_client_server*"))))
            raise
        # the driver really went through Ray Client: the proxy started a server for this client's session
        assert list(logs_dir.glob("ray_client_server_*.out"))
        infos = [read_trial(d) for d in SweepFolder(sweep_dir).trial_dirs()]
        assert [i["status"] for i in infos] == ["TERMINATED", "TERMINATED"]
        assert (sweep_dir / "results.parquet").exists()
    finally:
        ray.shutdown()
        head.stdin.close()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
