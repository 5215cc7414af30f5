"""An sbatch script that runs a sweep on a Ray cluster started inside one SLURM allocation.

``pathfm sweep slurm-script SPEC --nodes N --gpus-per-node G --partition P`` writes it. The script

1. takes the allocation's node list (``scontrol show hostnames``): the first node is the Ray head and
   runs the sweep driver, the others are Ray workers; every ``ray start`` runs under ``srun`` on its node
   (one task per node holding all of its GPUs and CPUs) with ``--block``, so SLURM owns the processes;
2. turns on Ray token authentication (``RAY_AUTH_MODE=token``; Ray 2.59+ enables it for local clusters and
   2.61 for all clusters): a fresh random token per job in a file only the user can read
   (``RAY_AUTH_TOKEN_PATH``), exported to every ``srun`` step, so no other user of the shared nodes can
   submit work to the cluster;
3. waits until the head answers and all N nodes have joined (or fails after ``--wait-s``), then runs
   ``pathfm sweep run SPEC --address HEAD:PORT --storage ABSOLUTE_PATH`` (or ``pathfm sweep resume`` when the
   sweep folder already exists, so a requeued job continues instead of starting over);
4. forwards SLURM's warning signal (``--signal=B:TERM@<grace>``: SIGTERM to the batch shell before the time
   limit) to the driver, which saves the Tune state and exits; ``ray stop`` runs on exit.

The storage path must be absolute and visible at the same place on every node (trial folders are written by
whichever node runs a trial). One trial per node with ``resources.workers: G`` DDP workers is the usual
layout; :func:`check_layout` says when the spec cannot fit a node.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pathfm.errors import ConfigError
from pathfm.records.sweep_folder import SPEC_FILE

if TYPE_CHECKING:  # a spec is read (its name and resources), never built here
    from pathfm.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class SlurmJob:
    """The allocation the script asks for and how Ray is laid out on it."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    partition: str
    time: str = "24:00:00"
    account: str | None = None
    port: int = 6379
    wait_s: int = 300
    grace_s: int = 300  # SIGTERM this long before the time limit: the driver saves its state
    job_name: str | None = None
    extra_sbatch: tuple[str, ...] = ()


_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
_SBATCH_WORD = re.compile(r"^[A-Za-z0-9_.,:+=/@-]+$")


def check_job(job: SlurmJob) -> None:
    """Refuse values that would make an invalid or unsafe sbatch header (names the option and the fix)."""
    if job.nodes < 1:
        raise ConfigError(f"--nodes {job.nodes}: give at least 1 node")
    if job.gpus_per_node < 0 or job.cpus_per_node < 1:
        raise ConfigError("--gpus-per-node must be >= 0 and --cpus-per-node >= 1")
    if not _TIME.match(job.time):
        raise ConfigError(f"--time '{job.time}': use SLURM's format, e.g. 24:00:00 or 2-00:00:00")
    for option, value in (("--partition", job.partition), ("--account", job.account), ("--job-name", job.job_name)):
        if value is not None and not _SBATCH_WORD.match(value):
            raise ConfigError(f"{option} '{value}': letters, digits and _.,:+=/@- only")
    if not 1024 <= job.port <= 65535:
        raise ConfigError(f"--port {job.port}: choose a free port between 1024 and 65535")
    for line in job.extra_sbatch:
        if "\n" in line or not line.startswith("--"):
            raise ConfigError(f"--sbatch '{line}': one sbatch option such as --qos=high per flag")


def check_layout(spec: SweepSpec, job: SlurmJob) -> None:
    """A trial must fit on one node of the allocation (Ray places a trial's DDP workers with its own
    scheduling, but a trial asking for more GPUs or CPUs than a node has never starts)."""
    r = spec.resources
    gpus = r.gpu * r.workers
    if gpus > job.gpus_per_node:
        raise ConfigError(
            f"the sweep's trials need {gpus:g} GPUs (resources.gpu={r.gpu:g} x workers={r.workers}) but a node has "
            f"--gpus-per-node {job.gpus_per_node}: lower resources.workers or ask for more GPUs per node")
    if r.cpu * r.workers > job.cpus_per_node:
        raise ConfigError(
            f"the sweep's trials need {r.cpu * r.workers:g} CPUs (resources.cpu x workers) but a node has "
            f"--cpus-per-node {job.cpus_per_node}: lower resources.cpu or raise --cpus-per-node")


def sbatch_script(spec_path: str | Path, spec: SweepSpec, storage: str | Path, job: SlurmJob, *,
                  python: str | None = None) -> str:
    """The sbatch script's text (see the module docstring). ``storage`` must be an absolute path."""
    check_job(job)
    check_layout(spec, job)
    storage = Path(storage).expanduser()
    if not storage.is_absolute():
        raise ConfigError(f"--storage '{storage}': give an absolute path on the shared file system (every node "
                          "writes trial folders there), e.g. /shared/$USER/sweeps")
    spec_file = Path(spec_path).expanduser().resolve()
    python = python or sys.executable
    q = shlex.quote
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.job_name or 'pathfm-' + spec.name}",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={job.cpus_per_node}",
        # per task (one task per node): every srun step of one task gets the node's GPUs, as in Ray's SLURM template
        *([f"#SBATCH --gpus-per-task={job.gpus_per_node}"] if job.gpus_per_node else []),
        f"#SBATCH --partition={job.partition}",
        *([f"#SBATCH --account={job.account}"] if job.account else []),
        f"#SBATCH --time={job.time}",
        "#SBATCH --exclusive",
        f"#SBATCH --signal=B:TERM@{job.grace_s}",
        "#SBATCH --output=pathfm-%x-%j.out",
        *[f"#SBATCH {line}" for line in job.extra_sbatch],
    ]
    sweep_dir = storage / spec.name
    body = f"""
# Written by `pathfm sweep slurm-script` for sweep '{spec.name}'. Ray head + sweep driver on the first node,
# Ray workers on the others; every node must see {storage} at the same path.
set -euo pipefail

PYTHON="${{PATHFM_PYTHON:-{python}}}"
RAY="${{PATHFM_RAY:-$(dirname "$PYTHON")/ray}}"
SPEC={q(str(spec_file))}
STORAGE={q(str(storage))}
SWEEP_DIR={q(str(sweep_dir))}
PORT={job.port}
NODES={job.nodes}
GPUS_PER_NODE={job.gpus_per_node}
CPUS_PER_NODE={job.cpus_per_node}
WAIT_S={job.wait_s}

export RAY_USAGE_STATS_ENABLED=0
# Ray token authentication: one random token per job, readable by this user only, seen by every srun step
export RAY_AUTH_MODE=token
token_dir="${{HOME}}/.pathfm/ray_tokens"
mkdir -p "$token_dir" && chmod 700 "$token_dir"
export RAY_AUTH_TOKEN_PATH="$token_dir/${{SLURM_JOB_ID}}.token"
(umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if [ "${{#nodes[@]}}" -ne "$NODES" ]; then
    echo "pathfm: expected $NODES nodes, SLURM gave ${{#nodes[@]}}: ${{nodes[*]}}" >&2
    exit 1
fi
head_node="${{nodes[0]}}"
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{{print $1}}')
address="$head_ip:$PORT"

cleanup() {{
    srun --overlap --nodes="$NODES" --ntasks="$NODES" --ntasks-per-node=1 "$RAY" stop --force >/dev/null 2>&1 || true
    rm -f "$RAY_AUTH_TOKEN_PATH"
}}
trap cleanup EXIT

echo "pathfm: Ray head on $head_node ($address); workers: ${{nodes[*]:1}}"
srun --nodes=1 --ntasks=1 -w "$head_node" \\
    "$RAY" start --head --node-ip-address="$head_ip" --port="$PORT" \\
    --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" --include-dashboard=false --block &

"$PYTHON" -m pathfm.infra.slurm wait-nodes --address "$address" --nodes 1 --timeout "$WAIT_S"

for ((i = 1; i < NODES; i++)); do
    srun --nodes=1 --ntasks=1 -w "${{nodes[$i]}}" \\
        "$RAY" start --address="$address" \\
        --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" --block &
done

"$PYTHON" -m pathfm.infra.slurm wait-nodes --address "$address" --nodes "$NODES" --timeout "$WAIT_S"

# SLURM's warning signal (--signal=B:TERM@...) or scancel: the driver saves the Tune state and exits
# (the trap is set before the driver starts, so a signal in between is not lost)
term=0
driver=""
trap 'term=1; if [ -n "$driver" ]; then kill -TERM "$driver" 2>/dev/null || true; fi' TERM INT
if [ -f "$SWEEP_DIR/{SPEC_FILE}" ]; then  # a requeued or repeated job: continue the sweep
    "$PYTHON" -m pathfm sweep resume "$SWEEP_DIR" --address "$address" &
else
    "$PYTHON" -m pathfm sweep run "$SPEC" --address "$address" --storage "$STORAGE" &
fi
driver=$!
if [ "$term" -eq 1 ]; then kill -TERM "$driver" 2>/dev/null || true; fi
set +e
wait "$driver"; status=$?
# a signal interrupts `wait` (status 128+n) while the driver is still saving, or after bash has already reaped
# it; either way `wait` again returns the driver's own exit status
while [ "$term" -eq 1 ]; do term=0; wait "$driver"; status=$?; done
set -e
echo "pathfm: sweep driver exited with $status; resume with: sbatch $0 (or pathfm sweep resume $SWEEP_DIR --address ...)"
exit "$status"
"""
    return "\n".join(header) + "\n" + body


def wait_for_nodes(address: str, nodes: int, timeout_s: float, poll_s: float = 5.0) -> int:
    """Block until ``nodes`` Ray nodes are alive at ``address``; returns the count, raises after ``timeout_s``."""
    import time

    import ray

    deadline = time.time() + timeout_s
    while True:  # the head may still be starting
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            break
        except ConnectionError as e:
            if time.time() > deadline:
                raise ConfigError(f"no Ray head answered at {address} within {timeout_s:g} s ({e}); check the head's "
                                  "lines in the job's output file") from None
            time.sleep(poll_s)
    try:
        while True:
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
            if alive >= nodes:
                return alive
            if time.time() > deadline:
                raise ConfigError(f"only {alive} of {nodes} Ray nodes joined {address} within {timeout_s:g} s; "
                                  "check the worker lines of the job's output file")
            time.sleep(poll_s)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m pathfm.infra.slurm wait-nodes --address A --nodes N --timeout S`` (used by the script)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pathfm.infra.slurm")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-nodes")
    w.add_argument("--address", required=True)
    w.add_argument("--nodes", type=int, required=True)
    w.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    try:
        n = wait_for_nodes(args.address, args.nodes, args.timeout)
    except ConfigError as e:
        print(f"pathfm: {e}", file=sys.stderr)
        return 1
    print(f"pathfm: {n} Ray nodes up at {args.address}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
