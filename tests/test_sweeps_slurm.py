"""`pathfm sweep slurm-script`: the sbatch script it writes is valid bash, asks SLURM for the allocation given,
and, run by bash against recording stand-ins for ``scontrol``/``srun``/``ray``/python (no SLURM here), starts
the Ray head on the first node, the workers on the others, waits for all nodes, runs the sweep with token
auth and an absolute storage path, resumes an existing sweep, and forwards SIGTERM to the driver."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pathfm.cli import main
from pathfm.errors import ConfigError
from pathfm.infra.slurm import SlurmJob, sbatch_script
from pathfm.sweeps.spec import load_spec, spec_from_dict

SPEC = "sweeps/examples/kde_smoke.yaml"


def _write(tmp_path: Path, storage: Path, *extra: str) -> Path:
    out = tmp_path / "job.sbatch"
    rc = main(["sweep", "slurm-script", SPEC, "--nodes", "3", "--gpus-per-node", "0", "--cpus-per-node", "4",
               "--partition", "gpu_a100", "--storage", str(storage), "--time", "02:00:00", "-o", str(out), *extra])
    assert rc == 0
    return out


@pytest.mark.timeout(120)
def test_script_is_valid_bash_and_asks_for_the_allocation(tmp_path: Path):
    out = _write(tmp_path, tmp_path / "shared", "--account", "lab42", "--sbatch=--qos=high")
    text = out.read_text()
    subprocess.run(["bash", "-n", str(out)], check=True)
    assert os.access(out, os.X_OK)
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for want in ("--nodes=3", "--ntasks-per-node=1", "--cpus-per-task=4", "--partition=gpu_a100", "--account=lab42",
                 "--time=02:00:00", "--qos=high", "--signal=B:TERM@300"):
        assert f"#SBATCH {want}" in header, want
    assert not any("--gpus" in h for h in header)  # 0 GPUs: no GPU request at all
    gpu = sbatch_script(SPEC, load_spec(SPEC), "/shared", SlurmJob(nodes=2, gpus_per_node=4, cpus_per_node=32,
                                                                    partition="gpu"))
    assert "#SBATCH --gpus-per-task=4" in gpu.splitlines() and "GPUS_PER_NODE=4" in gpu
    assert "export RAY_AUTH_MODE=token" in text
    assert f"STORAGE={tmp_path / 'shared'}" in text


def test_bad_requests_are_refused_before_writing(tmp_path: Path):
    spec = spec_from_dict({"name": "ddp", "resources": {"cpu": 4, "gpu": 1, "workers": 4}})
    with pytest.raises(ConfigError, match="need 4 GPUs"):
        sbatch_script(SPEC, spec, "/shared", SlurmJob(nodes=2, gpus_per_node=2, cpus_per_node=16, partition="p"))
    with pytest.raises(ConfigError, match="absolute path"):
        sbatch_script(SPEC, spec, "rel/sweeps", SlurmJob(nodes=2, gpus_per_node=4, cpus_per_node=16, partition="p"))
    with pytest.raises(ConfigError, match="--partition"):
        sbatch_script(SPEC, spec, "/shared", SlurmJob(nodes=2, gpus_per_node=4, cpus_per_node=16, partition="a;rm"))
    assert main(["sweep", "slurm-script", SPEC, "--nodes", "1", "--gpus-per-node", "0", "--partition", "p",
                 "--storage", "relative", "-o", str(tmp_path / "x.sbatch")]) == 2
    assert not (tmp_path / "x.sbatch").exists()


STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $*" in
  "scontrol show hostnames"*) printf 'gpu001\\ngpu002\\ngpu003\\n' ;;
  *"hostname --ip-address"*) echo "10.1.2.3 fe80::1" ;;
  "python -c"*) echo 0123456789abcdef ;;
  "python -m pathfm sweep"*)
     trap 'kill "$nap" 2>/dev/null; echo "driver-saved-on-TERM" >> "$CALLS"; exit 0' TERM
     echo "driver-started" >> "$CALLS"  # only after the trap: the test sends TERM once it reads this
     if [ -n "${DRIVER_SLEEP:-}" ]; then sleep 30 & nap=$!; wait "$nap"; fi ;;
esac
exit 0
"""


def _run_script(tmp_path: Path, out: Path, **env_extra: str) -> tuple[subprocess.Popen, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("scontrol", "srun", "ray", "python"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls), HOME=str(tmp_path / "home"),
               SLURM_JOB_ID="777", SLURM_JOB_NODELIST="gpu[001-003]", PATHFM_PYTHON=str(bin_dir / "python"),
               PATHFM_RAY=str(bin_dir / "ray"), **env_extra)
    proc = subprocess.Popen(["bash", str(out)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, calls


@pytest.mark.timeout(120)
def test_script_starts_head_then_workers_then_the_sweep(tmp_path: Path):
    storage = tmp_path / "shared"
    out = _write(tmp_path, storage)
    proc, calls = _run_script(tmp_path, out)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    log = calls.read_text().splitlines()
    srun_starts = [c for c in log if c.startswith("srun") and " start " in c]
    (head,) = [c for c in srun_starts if "--head" in c]
    assert head.startswith("srun --nodes=1 --ntasks=1 -w gpu001 ")
    assert "--node-ip-address=10.1.2.3" in head and "--port=6379" in head and "--block" in head
    worker_lines = [c for c in srun_starts if c != head]
    assert sorted(c.split(" -w ")[1].split()[0] for c in worker_lines) == ["gpu002", "gpu003"]
    assert all("--address=10.1.2.3:6379" in c and "--block" in c for c in worker_lines)

    def index(prefix: str) -> int:
        return next(i for i, c in enumerate(log) if c.startswith(prefix))

    wait_head = index("python -m pathfm.infra.slurm wait-nodes --address 10.1.2.3:6379 --nodes 1")
    wait_all = index("python -m pathfm.infra.slurm wait-nodes --address 10.1.2.3:6379 --nodes 3")
    run = index("python -m pathfm sweep run")
    # the sruns run in the background, so only these orders are fixed: workers start after the head answered,
    # the sweep after all nodes joined
    assert wait_head < index("srun --nodes=1 --ntasks=1 -w gpu002") and wait_head < index("srun --nodes=1 --ntasks=1 -w gpu003")
    assert wait_head < wait_all < run
    spec_abs = str((Path.cwd() / SPEC).resolve())
    assert log[run] == f"python -m pathfm sweep run {spec_abs} --address 10.1.2.3:6379 --storage {storage}"
    assert any(c.startswith("srun --overlap") and "stop --force" in c for c in log)  # ray stop on exit
    token_dir = tmp_path / "home" / ".pathfm" / "ray_tokens"
    assert stat.S_IMODE(token_dir.stat().st_mode) == 0o700
    assert not (token_dir / "777.token").exists()  # removed at exit


@pytest.mark.timeout(120)
def test_an_existing_sweep_is_resumed_and_sigterm_reaches_the_driver(tmp_path: Path):
    storage = tmp_path / "shared"
    out = _write(tmp_path, storage)
    name = load_spec(SPEC).name
    (storage / name).mkdir(parents=True)
    (storage / name / "sweep_spec.yaml").write_text("name: x\n")
    proc, calls = _run_script(tmp_path, out, DRIVER_SLEEP="1")
    deadline = time.time() + 30
    while "driver-started" not in calls.read_text():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # SLURM's --signal=B:TERM before the time limit
    stdout, stderr = proc.communicate(timeout=30)
    log = calls.read_text().splitlines()
    seen = f"exit {proc.returncode}\nstdout: {stdout}\nstderr: {stderr}\ncalls: {log}"
    assert f"python -m pathfm sweep resume {storage / name} --address 10.1.2.3:6379" in log, seen
    assert "driver-saved-on-TERM" in log, seen
    assert proc.returncode == 0, seen


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wait_nodes_against_a_real_ray_head():
    """The script's `wait-nodes` step, against a real local Ray head: 1 node up at once; 2 nodes never come."""
    import sys

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        cmd = [sys.executable, "-m", "pathfm.infra.slurm", "wait-nodes", "--address", address]
        up = subprocess.run(cmd + ["--nodes", "1", "--timeout", "60"], capture_output=True, text=True, timeout=120)
        missing = subprocess.run(cmd + ["--nodes", "2", "--timeout", "2"], capture_output=True, text=True, timeout=120)
    finally:
        ray.shutdown()
    assert up.returncode == 0 and f"1 Ray nodes up at {address}" in up.stdout, up.stderr[-2000:]
    assert missing.returncode == 1 and "only 1 of 2 Ray nodes joined" in missing.stderr, missing.stderr[-2000:]
