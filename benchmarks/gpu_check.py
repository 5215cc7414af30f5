"""One command that shows what pathfm does on a GPU: prints, and writes JSON + Markdown of, six checks.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check/         # on a CUDA machine, <= ~6 minutes
    .venv/bin/python benchmarks/gpu_check.py --cpu --out /tmp/gc/     # the same checks, tiny, on CPU (~3 min)

1. environment: torch / CUDA / device name, bf16 support, whether xformers imports;
2. training step (benchmarks/train_step.py in a subprocess per model): images/s, MFU (CUDA, against
   ``--peak-tflops``; 989 = H100/H200 SXM bf16 dense) and peak memory of a full SSL step for ViT-S/14 and
   ViT-B/14 at the recipe's crops (2 x 224 + 8 x 98 px, K = 65,536, batch 64, bf16, SDPA), beside the
   bare backbone work it contains;
3. data pipeline (benchmarks/data_pipeline.py --quick): samples/s per core of the CPU worker part with
   ``data.augment_on=device`` and of the full CPU path, so one can see how many cores keep this GPU fed;
4. a real 50-step ``configs/vitb14_ablation.yaml`` run on the bundled slides with ``augment_on=device``:
   every loss finite, steps/s;
5. a 2-trial Ray Tune sweep with ``resources: {gpu: 1}`` (both trials TERMINATED);
6. large backbones (docs/large-backbones.md): ``pathfm train --dry-run`` (the per-GPU memory estimate), then
   10 steps of ViT-L/14 with ``run.strategy=fsdp``, ``model.activation_checkpointing=true`` and
   ``model.compile=true`` under ``torchrun`` on every visible GPU, then its measured peak memory beside
   the estimate. FSDP shards only with 2 or more processes: on one GPU this run is unsharded (world of
   one) and exercises activation checkpointing, compile and the sharded checkpoint format. With
   ``--cpu``: 2 gloo processes, sharded, ViT-pico, no compile (minutes of inductor compilation on 2 cores).

Each check runs in its own subprocess with a time limit; a failed check is recorded with its last
output lines and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_check(name: str, cmd: list[str], timeout_s: float, env: dict | None = None) -> dict:
    """Run ``cmd`` (cwd: the repository); {name, ok, seconds, tail, command}."""
    t0 = time.perf_counter()
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **(env or {})})
        ok, out = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        ok = False
        out = f"{(e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else e.stdout or ''}\n" \
              f"timed out after {timeout_s:.0f} s"
    tail = "\n".join(out.strip().splitlines()[-25:])
    print(tail, flush=True)
    return {"name": name, "ok": ok, "seconds": round(time.perf_counter() - t0, 1), "tail": tail,
            "command": " ".join(cmd)}


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpu_cores": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import xformers  # noqa: F401

        info["xformers"] = True
    except Exception:  # noqa: BLE001 - any import failure means SDPA is used
        info["xformers"] = False
    return info


def sweep_spec(cpu: bool) -> dict:
    """Two tiny trials (a KDE grid of two) on the bundled slides, one GPU each (none with --cpu)."""
    return {
        "name": "gpu_check",
        "base": "smoke",
        "overrides": {"data.slides": "samples/wsi", "data.assume_mpp": 0.5, "optim.steps": 10,
                      "optim.warmup_steps": 1, "data.batch_size": 8},
        "space": {"kde_weight": {"grid": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"},
        "eval": {"enabled": False},
        "report_every": 5,
        "resources": {"cpu": 1, "gpu": 0 if cpu else 1},
    }


def checks(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str], float]]:
    bench = str(REPO / "benchmarks")
    if args.cpu:
        step = [PY, f"{bench}/train_step.py", "--archs", "vit_pico", "--batch", "2", "--global-size", "56",
                "--local-size", "28", "--n-local", "2", "--prototypes", "1024", "--reps", "2", "--threads", "1"]
        train = [PY, "-m", "pathfm.cli", "train", "smoke", "optim.steps=5", "data.augment_on=device",
                 f"run.output_dir={work}/runs", "run.progress=false", "probe.every=0"]
    else:
        step = [PY, f"{bench}/train_step.py", "--archs", "vit_small", "vit_base", "--device", "cuda",
                "--precision", "bf16", "--batch", "64", "--global-size", "224", "--local-size", "98",
                "--n-local", "8", "--prototypes", "65536", "--peak-tflops", str(args.peak_tflops)]
        train = [PY, "-m", "pathfm.cli", "train", "configs/vitb14_ablation.yaml", "optim.steps=50",
                 "optim.warmup_steps=5", "data.slides=samples/wsi", "data.assume_mpp=0.5",
                 "data.augment_on=device", f"data.num_workers={max(1, min(8, (os.cpu_count() or 2) - 2))}",
                 f"run.output_dir={work}/runs", "run.progress=false", "probe.every=0"]
    large = large_backbone_check(args.cpu, work)
    spec = work / "gpu_check_sweep.yaml"
    spec.write_text(yaml.safe_dump(sweep_spec(args.cpu), sort_keys=False))
    sweep = [PY, "-m", "pathfm.cli", "sweep", "run", str(spec), "--storage", str(work / "sweeps"), "-q"]
    return [
        ("training step", step, 240),
        ("data pipeline", [PY, f"{bench}/data_pipeline.py", "--quick"], 150),
        ("50-step run" if not args.cpu else "5-step run", train, 240),
        ("2-trial sweep", sweep, 240),
        ("large backbone: fsdp + activation checkpointing + compile", large, 420),
    ]


def large_backbone_check(cpu: bool, work: Path) -> list[str]:
    """One shell command: the dry-run estimate, a short FSDP run under torchrun, its peak memory vs the estimate."""
    import shlex

    import torch

    run_dir = work / "large"
    if cpu:
        nproc, config = 2, ["smoke", "optim.steps=3", "data.batch_size=2", "data.crops.n_local=2",
                            "run.device=cpu", "run.threads=1", "model.compile=false"]
    else:
        nproc = max(1, torch.cuda.device_count())
        config = ["configs/vitb14_ablation.yaml", "model.arch=vit_large", "optim.steps=10", "optim.warmup_steps=2",
                  "data.batch_size=32", "model.compile=true", "data.slides=samples/wsi", "data.assume_mpp=0.5",
                  "data.augment_on=device", f"data.num_workers={max(1, min(4, (os.cpu_count() or 2) // nproc - 1))}"]
    config += ["run.strategy=fsdp", "model.activation_checkpointing=true", "run.checkpoint_every=5",
               "run.progress=false", "probe.every=0"]
    cli = [PY, "-m", "pathfm.cli", "train", *config, "--run-dir", str(run_dir)]
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "pathfm.cli",
                "train", *config, "--run-dir", str(run_dir)]
    report = [PY, "-c", "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; "
              "print('steps', [x['step'] for x in r], 'losses', [round(x['loss'], 3) for x in r]); "
              "print('measured peak memory per process: %.2f GiB' % (max(x['peak_mem_mb'] for x in r) / 1024))",
              str(run_dir / "metrics.jsonl")]
    env = f"WORLD_SIZE={nproc} "  # the dry run estimates for the processes torchrun will start
    line = " && ".join([env + shlex.join(cli + ["--dry-run"]), shlex.join(torchrun), shlex.join(report)])
    return ["bash", "-c", line]


def markdown(env: dict, results: list[dict]) -> str:
    lines = ["# pathfm GPU check", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    for r in results:
        lines += ["", f"## {r['name']}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']} s)", "",
                  f"`{r['command']}`", "", "```", r["tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on CPU (a smoke test of this script)")
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="device bf16 dense peak for MFU")
    p.add_argument("--only", nargs="*", default=None, help="run only these checks (by name)")
    args = p.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --cpu for the tiny CPU version", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    print(json.dumps(env), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="pathfm_gpu_check_") as tmp:
        for name, cmd, limit in checks(args, Path(tmp)):
            if args.only and name not in args.only:
                continue
            results.append(run_check(name, cmd, limit,
                                     env={"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
                                          "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg"}))
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "checks": results}, indent=1))
    (out / "gpu_check.md").write_text(markdown(env, results))
    failed = [r["name"] for r in results if not r["ok"]]
    print(f"wrote {out / 'gpu_check.md'}; " + (f"FAILED: {', '.join(failed)}" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
