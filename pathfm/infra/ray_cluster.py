"""The Ray cluster a sweep runs on: connecting (an embedded local Ray or an existing cluster), checking before
anything starts that some node can ever host a trial, and what Tune reserves per trial. How many trials run at
once is :func:`pathfm.sweeps.cost.concurrent_trials`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from pathfm.errors import SweepError
from pathfm.io import redact_url

if TYPE_CHECKING:  # a spec is read (its resources), never built here
    from pathfm.sweeps.spec import SweepSpec


def _default_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:  # our own embedded cluster: no token needed (Ray >= 2.59 turns token auth on by default)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # intermediate reports carry in-training metrics only; the objective comes with the last report
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")


# Ray Client's proxy starts one server process per client session, and the session's first request (Init) fails
# when that server does not come up: it fails at once ("Starting Ray client server failed"; measured: the first of
# four connections to a fresh head failed, the other three worked), it is slower to start than the proxy waits
# (RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S, 30 s: "Proxy failed to Connect to backend"), or its own ray.init
# fails. All reach the client as "Initialization failure from server" (seen once in a full test suite with two
# CPU-burning processes beside it, after the start failure was already retried). A new session cures a
# transient one; a lasting one fails the same way CLIENT_SERVER_ATTEMPTS times, then gets the error below.
CLIENT_SERVER_ATTEMPTS = 3
CLIENT_SERVER_INIT_FAILURE = "Initialization failure from server"


def client_server_failed_to_start(address: str, message: str) -> bool:
    """True for the Ray Client error that a new connection attempt can cure (only for ``ray://`` addresses)."""
    return address.startswith("ray://") and CLIENT_SERVER_INIT_FAILURE in message


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            verbose: int = 1) -> bool:
    """Connect to Ray; returns True if this call started the connection (and should shut it down).

    ``address=None``: reuse an initialised Ray, else start an embedded local one; ``"auto"`` or
    ``"ray://host:10001"`` / ``"host:6379"``: join that cluster."""
    import ray

    _default_env(address)
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 object_store_memory=int(os.environ.get("PATHFM_OBJECT_STORE_MB", "512")) * 2**20,
                 log_to_driver=verbose >= 2, configure_logging=True, logging_level="WARNING")
    else:
        if num_cpus is not None or num_gpus is not None:
            raise SweepError("--num-cpus/--num-gpus only apply to a local Ray; a cluster has its own resources")
        for attempt in range(1, CLIENT_SERVER_ATTEMPTS + 1):
            try:
                context = ray.init(address=address, log_to_driver=verbose >= 2, logging_level="WARNING")
                break
            except ConnectionError as e:
                if client_server_failed_to_start(address, str(e)) and attempt < CLIENT_SERVER_ATTEMPTS:
                    print(f"pathfm sweep: the Ray Client server at '{redact_url(address)}' did not start a server for "
                          f"this session (attempt {attempt} of {CLIENT_SERVER_ATTEMPTS}); retrying",
                          file=sys.stderr, flush=True)
                    time.sleep(2.0)
                    continue
                raise SweepError(
                    f"cannot reach a Ray cluster at '{redact_url(address)}': {redact_url(str(e))}. Start one with `ray start --head` "
                    "(or `ray up cluster/example-cluster.yaml`), and use the same RAY_AUTH_MODE/token as the cluster"
                ) from None
        if verbose >= 1 and getattr(context, "dashboard_url", None):
            print(f"pathfm sweep: Ray dashboard at http://{context.dashboard_url}", file=sys.stderr, flush=True)
    return True


def check_resources(spec: SweepSpec, *, autoscaling: bool = False) -> dict[str, float]:
    """Fail early when no node can ever host a trial; returns the cluster totals. ``autoscaling``: the
    cluster adds nodes on demand, so only warn (trials wait for the autoscaler)."""
    import ray

    totals = ray.cluster_resources()
    if autoscaling:
        return totals
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    r = spec.resources
    per_node_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    per_node_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    n_gpu = totals.get("GPU", 0.0)
    if r.gpu > 0 and n_gpu == 0:
        raise SweepError(
            f"the sweep asks for resources.gpu={r.gpu} per trial but the Ray cluster has no GPU "
            f"({totals.get('CPU', 0):.0f} CPUs, 0 GPUs): set resources.gpu: 0 to train on CPUs, or connect "
            "to a GPU cluster with --address"
        )
    if r.gpu > per_node_gpu:
        raise SweepError(f"resources.gpu={r.gpu} per trial but the largest node has {per_node_gpu:.0f} GPUs; "
                         "use workers: N with gpu: 1 for multi-GPU trials")
    if r.cpu > per_node_cpu:
        raise SweepError(f"resources.cpu={r.cpu} per trial but the largest node has {per_node_cpu:.0f} CPUs; "
                         f"lower resources.cpu to at most {per_node_cpu:.0f}")
    if r.workers > 1:
        need_gpu = r.workers * (1 if r.gpu > 0 else 0)
        if need_gpu > n_gpu or r.workers * r.cpu > totals.get("CPU", 0):
            raise SweepError(f"resources.workers={r.workers} needs {need_gpu} GPUs and {r.workers * r.cpu:g} CPUs "
                             f"per trial; the cluster has {n_gpu:.0f} GPUs and {totals.get('CPU', 0):.0f} CPUs")
    return totals


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """What Tune reserves for one trial function."""
    r = spec.resources
    if r.workers > 1:  # the trial function only drives a TorchTrainer whose workers hold the devices
        return {"cpu": 0.01}
    return {"cpu": r.cpu, "gpu": r.gpu}
