"""One command that shows what pathfm does on a GPU, in at most 10 minutes on one GPU: prints, and writes
JSON + Markdown of, the checks below, in this order (docs/large-backbones.md, "The GPU check").

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check/          # on a CUDA machine, <= 10 minutes
    .venv/bin/python benchmarks/gpu_check.py --cpu --out /tmp/gc/      # the same sequence with CPU stand-ins
    .venv/bin/python benchmarks/gpu_check.py --cpu --quick             # the smallest sizes (the test runs this)

1. driver: torch / CUDA / the GPU, and nvidia-smi's GPUs and driver: fails when nvidia-smi lists a GPU that
   torch cannot use (pathfm.ssl.distributed.unusable_gpu_message);
2. start-up checks: every bundled preset's start-up checks at its intended world sizes (1, 2 and its scales'
   workers), and ``WORLD_SIZE=32 pathfm train midnight_vitg14 model.init_from=null --dry-run``;
3. sharded step: a 1-rank process group (NCCL; ``--cpu``: gloo) with the network really sharded by FSDP2 under
   the bf16 policy, compiled blocks (inductor; ``--cpu``: aot_eager), activation checkpointing,
   ``optim.grad_accum=2``, the host syncs of the step counted, and a DCP save / load round trip;
4. memory: the estimate (pathfm.ssl.memory) against ``torch.cuda.max_memory_reserved`` (and ``mem_get_info``)
   of 3 steps without activation checkpointing; fails past 15 % (``--cpu``: no device memory statistics;
   tests/test_ssl_memory_measured.py is the CPU measurement);
5. recompiles: a 2-step main stage, a high-resolution stage and an eager probe-like call between them, with
   the compile and graph-break counters (``TORCH_LOGS=recompiles,graph_breaks``): fails past 2 graphs or
   on a graph break;
6. resume: a 10-step run with a checkpoint at step 5, resumed from it to 10: the losses of steps 6-10 compared;
7. attention: SDPA against xformers on the same inputs when xformers is usable (skipped otherwise);
8. device augmentation: ``DeviceAugment`` on the GPU against the CPU on the same batch, and its throughput;
9. training step: images/s, MFU (against ``--peak-tflops``) and peak memory of ViT-S/14 (``--cpu``: pico);
10. a 2-trial Ray Tune sweep with ``resources: {gpu: 1}`` (both trials TERMINATED).

Each check runs in its own subprocess (this script with ``--part``) with a time limit, all within one
10-minute budget; a failed check is recorded with its last output lines and the others still run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
BUDGET_S = 600  # every check together, on one GPU
TOLERANCE = 0.15  # memory: estimate vs measured


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
    from pathfm.backbone.layers import xformers_available

    info["xformers"] = xformers_available()
    return info


def sweep_spec(cpu: bool) -> dict:
    """Two tiny trials (a KDE grid of two) on the bundled slides, one GPU each (none with --cpu)."""
    return {
        "name": "gpu_check",
        "base": "smoke",
        "overrides": {"data.slides": "samples/wsi", "data.assume_mpp": 0.5, "optim.steps": 4 if cpu else 10,
                      "optim.warmup_steps": 1, "data.batch_size": 4 if cpu else 8},
        "space": {"kde_weight": {"grid": [0.0, 0.05]}},
        "objective": {"metric": "loss", "mode": "min"},
        "eval": {"enabled": False},
        "report_every": 2,
        "resources": {"cpu": 1, "gpu": 0 if cpu else 1},
    }


# ------------------------------------------------------------------------------------- the parts
# Each part runs in its own process (``--part NAME``), prints what it found and exits non-zero on a failure.
class Stand:
    """The device and its CPU stand-ins: ``cpu`` for ``--cpu``, ``quick`` for the smallest sizes."""

    def __init__(self, cpu: bool, quick: bool) -> None:
        import torch

        self.cpu, self.quick = cpu, quick
        self.device = torch.device("cpu" if cpu else "cuda", 0 if not cpu else None)
        self.backend = "gloo" if cpu else "nccl"
        self.compile_backend = "aot_eager" if cpu else "inductor"
        self.arch = "vit_pico" if cpu else "vit_small"
        if cpu:
            torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    def cfg(self, extra: list[str] = ()) -> Any:
        from pathfm.config import load_config

        base = ["data.batch_size=2", "data.crops.n_local=2", "run.progress=false", "probe.every=0",
                f"model.arch={self.arch}", f"run.device={'cpu' if self.cpu else 'cuda'}",
                f"run.precision={'bf16' if not self.cpu else 'fp32'}"]
        if not self.cpu:
            base += ["data.batch_size=16", "data.crops.n_local=8", "data.crops.global_size=224",
                     "data.crops.local_size=98", "model.patch_size=14"]
        return load_config("smoke", base + list(extra))

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step_autocast(self) -> Any:
        """Around a training step: CPU bf16 autocast on --cpu (it casts as CUDA autocast does; the step's own
        autocast is CUDA-only), nothing on the GPU (the step enters CUDA autocast itself)."""
        import contextlib

        return self.autocast() if self.cpu else contextlib.nullcontext()

    def one_rank_group(self) -> None:
        import torch.distributed as dist

        from pathfm.ssl.distributed import init_distributed  # noqa: F401  (the same env variables)

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("GPU_CHECK_PORT", "29561"),
                          RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        if not self.cpu:
            import torch

            torch.cuda.set_device(0)
        dist.init_process_group(self.backend, rank=0, world_size=1)


def crops_for(cfg: Any, device: Any, n: int, seed: int = 0) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    c, b = cfg.data.crops, cfg.data.batch_size
    return [(torch.randn(c.n_global * b, 3, c.global_size, c.global_size, generator=g).to(device),
             torch.randn(c.n_local * b, 3, c.local_size, c.local_size, generator=g).to(device)) for _ in range(n)]


def build_models(cfg: Any, device: Any) -> Any:
    import torch

    from pathfm.ssl.param_groups import param_groups
    from pathfm.ssl.step import build_student_teacher
    from pathfm.ssl.training_step import StepModels

    torch.manual_seed(cfg.seed)
    student, teacher = build_student_teacher(cfg)
    student, teacher = student.to(device), teacher.to(device)
    opt = torch.optim.AdamW(param_groups(list(student.named_parameters()), student.backbone.depth, cfg.optim))
    return StepModels(student, teacher, opt)


def part_driver(st: Stand) -> None:
    import torch

    from pathfm.ssl.distributed import nvidia_smi_gpus, unusable_gpu_message

    smi = nvidia_smi_gpus()
    print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
    print("nvidia-smi:", smi.gpus if smi else "none (no nvidia-smi, or it lists no GPU)")
    why = unusable_gpu_message(smi, torch.cuda.is_available(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if why:
        raise SystemExit(why)
    if not st.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    print("driver check: ok")


def part_startup(st: Stand) -> None:
    from pathfm.ablations.scales import load_scales
    from pathfm.config import PRESET_DIR, load_config
    from pathfm.ssl.sharding import startup_checks

    scales = load_scales()
    for preset in sorted(p.stem for p in PRESET_DIR.glob("*.yaml")):
        worlds = sorted({1, 2} | {int(s.resources.get("workers", 1)) for s in scales.values() if s.base == preset})
        cfg = load_config(preset)
        for world in worlds:
            strategy = startup_checks(cfg, world)
            print(f"{preset}: {world} process(es): {strategy} passes")
    # without the DINOv2 weights it starts from (model.init_from), which the dry-run otherwise asks to fetch first
    cmd = [PY, "-m", "pathfm.cli", "train", "midnight_vitg14", "model.init_from=null", "data.slides=samples/wsi",
           "--dry-run"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": "32"})
    print(proc.stdout[-1500:], proc.stderr[-1500:])
    if proc.returncode != 0:
        raise SystemExit(f"WORLD_SIZE=32 {' '.join(cmd[2:])} failed")


def part_sharded(st: Stand, work: Path) -> None:
    import torch

    from pathfm.backbone.sharded_checkpoint import load_sharded, read_full_teacher, save_sharded
    from pathfm.backbone.vit import compile_blocks
    from host_syncs import HostSyncCounter  # beside this script
    from pathfm.ssl.sharding import mixed_precision_policy, shard_net
    from pathfm.ssl.training_step import StepPosition, training_step

    st.one_rank_group()
    cfg = st.cfg(["optim.grad_accum=2", "model.activation_checkpointing=true"])
    m = build_models(cfg, st.device)
    policy = mixed_precision_policy("cuda", "bf16")  # the GPU policy; under CPU autocast on --cpu
    for net in (m.student, m.teacher):
        compile_blocks(net.backbone, backend=st.compile_backend)
        net.backbone.activation_checkpointing = True
    m.shard_units = shard_net(m.student, policy)
    shard_net(m.teacher, policy)
    from pathfm.ssl.param_groups import param_groups

    m.optimizer = torch.optim.AdamW(param_groups(list(m.student.named_parameters()), m.student.backbone.depth, cfg.optim))
    losses = []
    for step in range(2):
        with HostSyncCounter() as syncs, st.step_autocast():
            r = training_step(m, cfg, 1e-4, StepPosition(0, step, step), crops_for(cfg, st.device, 2, step),
                              device=st.device, precision="bf16", check_finite=lambda parts: None)
        losses.append(sum(r.values.values()))
        print(f"step {step + 1}: loss {losses[-1]:.4f} grad norms {r.grad_norms} host syncs {dict(syncs.by_operation())}")
    if not all(map(math.isfinite, losses)):
        raise SystemExit("non-finite loss")
    if syncs.by_operation() != {"Tensor.tolist": 3}:
        raise SystemExit(f"host syncs of a step: {dict(syncs.seen)} (expected 2 loss reads + 1 gradient-norm read)")
    path = save_sharded(work / "sharded", 2, {"progress": {"global_step": 2}}, m.student, m.teacher, m.optimizer,
                        keep=1, is_main=True)
    before = read_full_teacher(path)["backbone"]
    fresh = build_models(cfg, st.device)
    for net in (fresh.student, fresh.teacher):
        shard_net(net, policy)
    fresh.optimizer = torch.optim.AdamW(param_groups(list(fresh.student.named_parameters()),
                                                     fresh.student.backbone.depth, cfg.optim))
    load_sharded(path, fresh.student, fresh.teacher, fresh.optimizer)
    from pathfm.ssl.sharding import full_state_dict

    after = full_state_dict(fresh.teacher.backbone)
    bad = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    print(f"DCP round trip: {len(before)} teacher tensors, {len(bad)} differ")
    if bad:
        raise SystemExit(f"DCP round trip changed {bad[:3]}")


def part_memory(st: Stand) -> None:
    import torch

    from pathfm.ssl.memory import estimate_memory
    from pathfm.ssl.training_step import StepPosition, training_step

    if st.cpu:
        print("skipped on CPU: no device memory statistics (tests/test_ssl_memory_measured.py measures the "
              "activation term under CPU autocast)")
        return
    cfg = st.cfg(["data.batch_size=32", "model.arch=vit_base"])
    est = estimate_memory(cfg, 1, "ddp", activation_checkpointing=False)
    free0, total = torch.cuda.mem_get_info()
    torch.cuda.reset_peak_memory_stats()
    m = build_models(cfg, st.device)
    for step in range(3):
        training_step(m, cfg, 1e-4, StepPosition(0, step, step), crops_for(cfg, st.device, 1, step),
                      device=st.device, precision="bf16")
    torch.cuda.synchronize()
    reserved = torch.cuda.max_memory_reserved()
    free1, _ = torch.cuda.mem_get_info()
    seen = reserved + (total - free0)  # the context and what was in use before, as nvidia-smi counts it
    error = relative_error(est.total, seen)
    print(f"estimate {est.total / 2**30:.2f} GiB; measured max reserved {reserved / 2**30:.2f} GiB, + in use "
          f"before {(total - free0) / 2**30:.2f} GiB = {seen / 2**30:.2f} GiB (free after {free1 / 2**30:.1f}); "
          f"error {error:+.1%}")
    if abs(error) > TOLERANCE:
        raise SystemExit(f"the estimate is {error:+.1%} off (limit {TOLERANCE:.0%})")


def relative_error(estimate: float, measured: float) -> float:
    """(estimate - measured) / measured; the memory check fails past :data:`TOLERANCE` either way."""
    return (estimate - measured) / measured


def part_recompiles(st: Stand) -> None:
    import torch
    from torch._dynamo.utils import counters

    from pathfm.backbone.vit import compile_blocks, eager_blocks
    from pathfm.ssl.training_step import StepPosition, training_step

    cfg = st.cfg()
    m = build_models(cfg, st.device)
    for net in (m.student, m.teacher):
        compile_blocks(net.backbone, backend=st.compile_backend)
    counters.clear()
    hi = st.cfg(["data.crops.global_size=%d" % (2 * cfg.data.crops.global_size),
                 "data.crops.local_size=%d" % (2 * cfg.data.crops.local_size), "data.batch_size=3"])
    for step, stage_cfg in enumerate((cfg, cfg, hi, hi)):  # 2 main steps, 2 high-res steps, the probe every step
        with st.step_autocast():
                training_step(m, stage_cfg, 1e-4, StepPosition(0, step, step), crops_for(stage_cfg, st.device, 1, step),
                          device=st.device, precision="bf16")
        with eager_blocks(), torch.no_grad():
            m.teacher.backbone.eval().forward_features(torch.randn(3, 3, cfg.data.crops.global_size,
                                                                   cfg.data.crops.global_size, device=st.device))
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    print(f"compiled graphs {graphs}, graph breaks {breaks}, recompiles {dict(counters['recompiles'])}")
    if graphs > 2 or breaks:
        raise SystemExit(f"{graphs} graphs (expected 2: student and teacher) and {breaks} graph breaks")


def part_resume(st: Stand, work: Path) -> None:
    import shutil

    from pathfm.backbone import checkpoint as ckpt
    from pathfm.io import read_jsonl
    from pathfm.ssl.trainer import train

    extra = ["optim.steps=10", "run.checkpoint_every=5", "run.keep_checkpoints=2", "data.slides=samples/wsi",
             "data.assume_mpp=0.5", "optim.warmup_steps=2"] + (["data.augment_on=device"] if not st.cpu else [])
    cfg = st.cfg(extra)
    full = work / "full"
    train(cfg, full)
    again = work / "resumed"
    shutil.copytree(full, again)
    train(cfg, again, resume=ckpt.checkpoint_path(again, 5))
    a, b = read_jsonl(full / "metrics.jsonl"), read_jsonl(again / "metrics.jsonl")
    la, lb = ([r["loss"] for r in rec if r["step"] > 5] for rec in (a, b))
    worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb)) if la else float("nan")
    print(f"steps 6-10: straight {[round(x, 5) for x in la]}, resumed {[round(x, 5) for x in lb]}; worst relative "
          f"difference {worst:.2e}")
    if len(la) != 5 or len(lb) != 5 or not worst <= (0.0 if st.cpu else 1e-3):
        raise SystemExit("the resumed run does not continue the straight one")


def part_attention(st: Stand) -> None:
    import torch

    from pathfm.backbone.layers import xformers_available
    from pathfm.backbone.vit import build_backbone

    if st.cpu or not xformers_available():
        print("skipped: xformers is not usable here (it needs CUDA and its kernel library); SDPA is used")
        return
    outs = {}
    for backend in ("sdpa", "xformers"):
        cfg = st.cfg([f"model.attention={backend}"])
        torch.manual_seed(0)
        net = build_backbone(cfg.model).to(st.device).eval()
        g = torch.randn(4, 3, cfg.data.crops.global_size, cfg.data.crops.global_size, device=st.device,
                        generator=torch.Generator(st.device).manual_seed(0))
        loc = torch.randn(8, 3, cfg.data.crops.local_size, cfg.data.crops.local_size, device=st.device,
                          generator=torch.Generator(st.device).manual_seed(1))
        with torch.no_grad(), st.autocast():
            outs[backend] = [o["cls"].float() for o in net.forward_features_list([g, loc])]
    diff = max(float((a - b).abs().max()) for a, b in zip(outs["sdpa"], outs["xformers"]))
    print(f"SDPA vs xformers (two crop groups, bf16): max |difference| of the CLS {diff:.2e}")
    if diff > 0.05:
        raise SystemExit(f"xformers differs from SDPA by {diff:.2e}")


def part_augment(st: Stand) -> None:
    import torch

    from pathfm.data.device_augment import DeviceAugment
    from pathfm.data.loader import build_train_loader

    cfg = st.cfg(["data.slides=samples/wsi", "data.assume_mpp=0.5", "data.augment_on=device", "data.num_workers=0"])
    loader = build_train_loader(cfg, rank=0, world_size=1, start_sample=0, device=st.device)
    loader.device_augment = None  # the workers' batch (tiles + crop parameters), augmented below on both devices
    batch = next(iter(loader))
    on_cpu = DeviceAugment(cfg.data, "cpu")(dict(batch))
    reps = 3 if st.quick else 10
    aug = DeviceAugment(cfg.data, st.device)
    out = aug(dict(batch))
    if st.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = aug(dict(batch))
    if st.device.type == "cuda":
        torch.cuda.synchronize()
    rate = reps * int(batch["n_images"]) / (time.perf_counter() - t0)
    diff = max(float((out[k].cpu() - on_cpu[k]).abs().max()) for k in ("global_crops", "local_crops"))
    print(f"DeviceAugment on {st.device}: {rate:.0f} images/s; max |{st.device.type} - cpu| = {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit(f"device augmentation differs from the CPU path by {diff:.2e}")


def run_part(name: str, st: Stand, work: Path) -> None:
    parts = {"driver": part_driver, "startup": part_startup, "memory": part_memory, "recompiles": part_recompiles,
             "attention": part_attention, "augment": part_augment}
    if name in ("sharded", "resume"):
        {"sharded": part_sharded, "resume": part_resume}[name](st, work)
    else:
        parts[name](st)


def checks(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str], float]]:
    """(name, command, time limit in s) of every check, in order; limits add up to :data:`BUDGET_S` at most."""
    me = [PY, str(Path(__file__).resolve()), "--work", str(work)] + (["--cpu"] if args.cpu else []) + (
        ["--quick"] if args.quick else [])
    bench = str(REPO / "benchmarks")
    if args.cpu:
        step = [PY, f"{bench}/train_step.py", "--archs", "vit_pico", "--batch", "2", "--global-size", "56",
                "--local-size", "28", "--n-local", "2", "--prototypes", "1024", "--reps", "2", "--threads", "1"]
    else:
        step = [PY, f"{bench}/train_step.py", "--archs", "vit_small", "--device", "cuda", "--precision", "bf16",
                "--batch", "64", "--global-size", "224", "--local-size", "98", "--n-local", "8",
                "--prototypes", "65536", "--peak-tflops", str(args.peak_tflops)]
    spec = work / "gpu_check_sweep.yaml"
    spec.write_text(yaml.safe_dump(sweep_spec(args.cpu), sort_keys=False))
    sweep = [PY, "-m", "pathfm.cli", "sweep", "run", str(spec), "--storage", str(work / "sweeps"), "-q"]
    out = [("driver", me + ["--part", "driver"], 20), ("start-up checks", me + ["--part", "startup"], 60),
           ("sharded step", me + ["--part", "sharded"], 90), ("memory", me + ["--part", "memory"], 60),
           ("recompiles", me + ["--part", "recompiles"], 60), ("resume", me + ["--part", "resume"], 90),
           ("attention", me + ["--part", "attention"], 20), ("device augmentation", me + ["--part", "augment"], 40),
           ("training step", step, 60)]
    if not args.quick:
        out.append(("2-trial sweep", sweep, 100))
    return out


def markdown(env: dict, results: list[dict]) -> str:
    lines = ["# pathfm GPU check", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    for r in results:
        lines += ["", f"## {r['name']}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']} s)", "",
                  f"`{r['command']}`", "", "```", r["tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="the same sequence with CPU stand-ins")
    p.add_argument("--quick", action="store_true", help="the smallest sizes, no sweep (tests/test_gpu_check.py)")
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="device bf16 dense peak for MFU")
    p.add_argument("--only", nargs="*", default=None, help="run only these checks (by name)")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # one check, in this process
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    if args.part:
        run_part(args.part, Stand(args.cpu, args.quick), Path(args.work or tempfile.mkdtemp()))
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --cpu for the CPU stand-ins", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    print(json.dumps(env), flush=True)
    results, deadline = [], time.monotonic() + BUDGET_S
    with tempfile.TemporaryDirectory(prefix="pathfm_gpu_check_") as tmp:
        for name, cmd, limit in checks(args, Path(tmp)):
            if args.only and name not in args.only:
                continue
            left = deadline - time.monotonic()
            if left < 5:
                results.append({"name": name, "ok": False, "seconds": 0, "tail": "not run: the 10-minute budget is spent",
                                "command": " ".join(cmd)})
                continue
            results.append(run_check(name, cmd, min(limit, left),
                                     env={"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
                                          "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg",
                                          "TORCH_LOGS": "recompiles,graph_breaks"}))
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "checks": results}, indent=1))
    (out / "gpu_check.md").write_text(markdown(env, results))
    failed = [r["name"] for r in results if not r["ok"]]
    print(f"wrote {out / 'gpu_check.md'}; " + (f"FAILED: {', '.join(failed)}" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
