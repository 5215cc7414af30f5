"""Cost of the full SSL step vs the bare backbone work it contains (issue 3 target: ratio <= 1.25).

    ours     = one full optimizer step of pathfm.ssl.step: iBOT masks, teacher forward + heads +
               Sinkhorn-Knopp, student forward on all crops + heads, DINO/iBOT/KDE losses, backward,
               per-submodule clipping, AdamW step, EMA update, schedule
    baseline = the backbone work inside it, measured in the same process on the same tensors: student
               backbone forward + backward on all crops (globals with masks, locals) + teacher backbone
               forward on the global crops

Prints a table (median of interleaved repetitions; on CPU also the ratio of process CPU times, which
other jobs on the machine disturb much less than wall time; use ``--threads 1`` there) and the peak
memory (process peak RSS on CPU, peak allocated on CUDA). Each model runs in its own subprocess so that
peaks do not mix.

What the ratio can show: how much the SSL machinery around the backbone (heads, losses, Sinkhorn-Knopp,
optimizer, clipping, EMA) adds to the backbone work it cannot avoid, for this backbone, head size, batch,
crop set and device. What it cannot show: whether pathfm is as fast as another trainer (the baseline is a
lower bound inside pathfm, not DINOv2's or anyone's code), whether the backbone itself runs efficiently
(a slow backbone makes the ratio look *better*), data loading, multi-GPU communication, or GPU behaviour
from CPU figures. The head costs grow with the prototype count K and the number of CLS and masked-patch
tokens, not with the backbone, so the ratio depends on the pairing: the recipe's heads (K = 65,536 shared
for the ViT-B ablations, 131,072 with a separate iBOT head for ViT-g) on a ViT-T/S give large ratios that
say nothing about the recipe's ViT-B/g, and a small K (the default 4,096) understates the head cost.

    .venv/bin/python benchmarks/train_step.py                  # vit_tiny and vit_small, CPU, K = 4096
    .venv/bin/python benchmarks/train_step.py --recipe-heads   # ... also at the recipe's head sizes
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
        f"ibot_head.n_prototypes={args.prototypes}", "dino_head.hidden_dim=2048",
        f"dino_head.bottleneck_dim={args.dino_bottleneck}", "ibot_head.hidden_dim=2048",
        "ibot_head.bottleneck_dim=256", f"loss.separate_ibot_head={str(args.separate_ibot_head).lower()}",
        "optim.warmup_steps=0",
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
    cpu: dict[str, list[float]] = {"full": [], "bare": []}  # process CPU time: robust to other jobs' load
    for i in range(args.reps):
        for name, fn in (("bare", bare_step), ("full", full_step)):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(args.warmup + i)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    full, bare = statistics.median(times["full"]), statistics.median(times["bare"])
    cpu_full, cpu_bare = statistics.median(cpu["full"]), statistics.median(cpu["bare"])
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
    n_params = sum(p.numel() for p in student.backbone.parameters())
    n_head = sum(p.numel() for n, p in student.named_parameters() if not n.startswith("backbone."))
    res = {"arch": arch, "full_s": full, "bare_s": bare, "ratio": full / bare, "images_per_s": b / full,
           "peak_mem_mb": peak, "backbone_params_m": n_params / 1e6, "head_params_m": n_head / 1e6,
           "heads": _head_label(args), "cpu_full_s": cpu_full, "cpu_bare_s": cpu_bare,
           "cpu_ratio": cpu_full / cpu_bare}  # fmt: skip
    if device.type == "cuda" and args.peak_tflops:
        tokens_g = 2 * b * (1 + grid * grid)
        tokens_l = n_l * b * (1 + (args.local_size // cfg.model.patch_size) ** 2)
        # 6 N flops/token fwd+bwd for the student, 2 N for the teacher forward (attention ignored)
        flops = 6 * n_params * (tokens_g + tokens_l) + 2 * n_params * tokens_g
        res["mfu"] = flops / full / (args.peak_tflops * 1e12)
    return res


def _head_label(args: argparse.Namespace) -> str:
    return f"K={args.prototypes} " + (f"separate (DINO 2048-{args.dino_bottleneck}, iBOT 2048-256)"
                                      if args.separate_ibot_head else f"shared 2048-{args.dino_bottleneck}")


#: the recipe's head sizes: the ViT-B/14 ablation preset (one head shared by DINO and iBOT) and the
#: Midnight ViT-g/14 preset (separate iBOT head, DINO bottleneck 384)
RECIPE_HEADS = [["--prototypes", "65536", "--dino-bottleneck", "256"],
                ["--prototypes", "131072", "--dino-bottleneck", "384", "--separate-ibot-head"]]


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
    p.add_argument("--dino-bottleneck", type=int, default=256)
    p.add_argument("--separate-ibot-head", action="store_true", help="iBOT gets its own head (Midnight ViT-g)")
    p.add_argument("--recipe-heads", action="store_true",
                   help="also measure each arch at the recipe's heads: K=65536 shared, K=131072 separate")
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
    argv = [a for a in sys.argv[1:] if a != "--recipe-heads"]
    head_sets = [[]] + (RECIPE_HEADS if args.recipe_heads else [])
    rows = []
    for arch in args.archs:
        for extra in head_sets:  # later flags override the command line's
            cmd = [sys.executable, __file__, *argv, *extra, "--one", arch]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"device={args.device} precision={args.precision} batch={args.batch} crops 2x{args.global_size} + "
          f"{args.n_local}x{args.local_size}, torch threads={torch.get_num_threads()}, "
          f"median of {args.reps}")  # fmt: skip
    on_cpu = args.device == "cpu"
    hdr = (f"{'arch':<10} {'heads':<52} {'head Mp':>7} {'full step (s)':>14} {'bare backbone (s)':>18} "
           f"{'ratio':>6} {'img/s':>7} {'peak MB':>8}")
    if on_cpu:
        hdr += f" {'CPU s full/bare':>16} {'CPU ratio':>9}"
    if any("mfu" in r for r in rows):
        hdr += f" {'MFU':>6}"
    print(hdr)
    for r in rows:
        line = (f"{r['arch']:<10} {r['heads']:<52} {r['head_params_m']:>7.1f} {r['full_s']:>14.3f} "
                f"{r['bare_s']:>18.3f} {r['ratio']:>6.2f} {r['images_per_s']:>7.1f} "
                f"{r['peak_mem_mb']:>8.0f}")  # fmt: skip
        if on_cpu:
            line += f" {r['cpu_full_s']:>7.2f}/{r['cpu_bare_s']:<8.2f} {r['cpu_ratio']:>9.2f}"
        if "mfu" in r:
            line += f" {r['mfu']:>6.1%}"
        print(line)
    print("ratio = full SSL step / bare backbone work inside it (student fwd+bwd on all crops, teacher fwd).\n"
          "It shows what the heads, losses, Sinkhorn-Knopp, optimizer, clipping and EMA add for this backbone,\n"
          "head size, batch, crops and device. It does not compare pathfm with another trainer, does not show\n"
          "whether the backbone itself is efficient, and excludes data loading and communication. Head cost\n"
          "scales with K and the CLS/masked-patch token count, not the backbone: recipe heads on a ViT-T/S\n"
          "overstate the recipe's (ViT-B/g) ratio, and a small K understates it.")


if __name__ == "__main__":
    main()
