"""Cost of the full SSL step vs the bare backbone work it contains (issue 3 target: ratio <= 1.25).

    ours     = one full optimizer step of pathfm.ssl.step: iBOT masks, teacher forward + heads +
               Sinkhorn-Knopp, student forward on all crops + heads, DINO/iBOT/KDE losses, backward,
               per-submodule clipping, AdamW step, EMA update, schedule
    baseline = the backbone work inside it, measured in the same process on the same tensors: student
               backbone forward + backward on all crops (globals with masks, locals) + teacher backbone
               forward on the global crops

Prints a table (median of interleaved repetitions) and the peak memory (process peak RSS on CPU, peak
allocated on CUDA). Each model runs in its own subprocess so that peaks do not mix.

    .venv/bin/python benchmarks/train_step.py                  # vit_tiny and vit_small, CPU
    .venv/bin/python benchmarks/train_step.py --archs vit_base --device cuda --precision bf16 --batch 64 \
        --global-size 224 --local-size 98 --n-local 8 --prototypes 65536     # a GPU, with MFU
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, arch: str) -> dict:
    from pathfm.config import load_config, lr_scaled
    from pathfm.ssl.param_groups import apply_schedule, param_groups
    from pathfm.ssl.schedules import schedule_values
    from pathfm.ssl.step import (
        build_student_teacher,
        clip_and_step,
        ema_update,
        make_ibot_masks,
        ssl_losses,
        teacher_targets,
    )

    cfg = load_config("smoke", [
        f"model.arch={arch}", "model.drop_path=0.1", f"data.batch_size={args.batch}",
        f"data.crops.global_size={args.global_size}", f"data.crops.local_size={args.local_size}",
        f"data.crops.n_local={args.n_local}", f"dino_head.n_prototypes={args.prototypes}",
        f"ibot_head.n_prototypes={args.prototypes}", "dino_head.hidden_dim=2048", "dino_head.bottleneck_dim=256",
        "ibot_head.hidden_dim=2048", "ibot_head.bottleneck_dim=256", "optim.warmup_steps=0",
    ])  # fmt: skip
    device = torch.device(args.device)
    torch.manual_seed(0)
    student, teacher = build_student_teacher(cfg)
    student, teacher = student.to(device), teacher.to(device)
    opt = torch.optim.AdamW(param_groups(list(student.named_parameters()), student.backbone.depth, cfg.optim))
    b, n_l = args.batch, args.n_local
    g = torch.randn(2 * b, 3, args.global_size, args.global_size, device=device)
    loc = torch.randn(n_l * b, 3, args.local_size, args.local_size, device=device)
    grid = args.global_size // cfg.model.patch_size
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.precision == "bf16"
                else torch.autocast("cpu", enabled=False))  # fmt: skip
    base_lr = lr_scaled(cfg)

    def full_step(step: int) -> None:
        sched = schedule_values(cfg, step, base_lr)
        apply_schedule(opt, sched)
        masks, w = make_ibot_masks(cfg.loss, seed_key=[0, 0, step, 0], n_global=2, images_global=b,
                                   rank_images=slice(0, b), grid=grid)  # fmt: skip
        masks = masks.to(device)
        with autocast:
            targets = teacher_targets(teacher, g, masks, sched["teacher_temp"], cfg.loss, None, None)
            out = student(g, loc, masks)
            parts = ssl_losses(out, targets, masks, w, cfg.loss, 2)
            loss = sum(parts.values())
            if not torch.isfinite(loss):
                raise RuntimeError("non-finite loss in benchmark")
            loss.backward()
        clip_and_step(student, opt, None, cfg.optim.clip_grad, step)
        ema_update(teacher, student, sched["momentum"])

    def bare_step(step: int) -> None:
        masks, _ = make_ibot_masks(cfg.loss, seed_key=[0, 0, step, 0], n_global=2, images_global=b,
                                   rank_images=slice(0, b), grid=grid)  # fmt: skip
        masks = masks.to(device)
        with autocast:
            with torch.no_grad():
                teacher.backbone.forward_features(g)
            outs = student.backbone.forward_features_list([g, loc], [masks, None])
            (sum(o["cls"].float().sum() + o["patch"].float().sum() for o in outs)).backward()
        student.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        full_step(i)
        bare_step(i)
    times: dict[str, list[float]] = {"full": [], "bare": []}
    for i in range(args.reps):
        for name, fn in (("bare", bare_step), ("full", full_step)):
            _sync(device)
            t0 = time.perf_counter()
            fn(args.warmup + i)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    full, bare = statistics.median(times["full"]), statistics.median(times["bare"])
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
    n_params = sum(p.numel() for p in student.backbone.parameters())
    res = {"arch": arch, "full_s": full, "bare_s": bare, "ratio": full / bare, "images_per_s": b / full,
           "peak_mem_mb": peak, "backbone_params_m": n_params / 1e6}  # fmt: skip
    if device.type == "cuda" and args.peak_tflops:
        tokens_g = 2 * b * (1 + grid * grid)
        tokens_l = n_l * b * (1 + (args.local_size // cfg.model.patch_size) ** 2)
        # 6 N flops/token fwd+bwd for the student, 2 N for the teacher forward (attention ignored)
        flops = 6 * n_params * (tokens_g + tokens_l) + 2 * n_params * tokens_g
        res["mfu"] = flops / full / (args.peak_tflops * 1e12)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vit_tiny", "vit_small"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--global-size", type=int, default=112)
    p.add_argument("--local-size", type=int, default=56)
    p.add_argument("--n-local", type=int, default=4)
    p.add_argument("--prototypes", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (bf16 dense) for MFU")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return
    rows = []
    for arch in args.archs:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", arch]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"device={args.device} precision={args.precision} batch={args.batch} crops 2x{args.global_size} + "
          f"{args.n_local}x{args.local_size}, K={args.prototypes}, torch threads={torch.get_num_threads()}")  # fmt: skip
    hdr = f"{'arch':<10} {'full step (s)':>14} {'bare backbone (s)':>18} {'ratio':>6} {'img/s':>7} {'peak MB':>8}"
    if any("mfu" in r for r in rows):
        hdr += f" {'MFU':>6}"
    print(hdr)
    for r in rows:
        line = (f"{r['arch']:<10} {r['full_s']:>14.3f} {r['bare_s']:>18.3f} {r['ratio']:>6.2f} "
                f"{r['images_per_s']:>7.1f} {r['peak_mem_mb']:>8.0f}")  # fmt: skip
        if "mfu" in r:
            line += f" {r['mfu']:>6.1%}"
        print(line)


if __name__ == "__main__":
    main()
