"""CPU time and peak memory of pathfm's training step against facebookresearch/dinov2's own step.

    python benchmarks/dinov2_step_speed.py --dinov2 /path/to/dinov2-checkout [--rounds 5] [--batch 8]
    python benchmarks/dinov2_step_speed.py --quick [--dinov2 ...]     # pico ViT, tiny crops and heads, 1 step

Both sides run the same work: identical initial weights (pathfm's seeded initialisation copied into DINOv2's
student and teacher), the same fixed crops and the same iBOT masks, ViT-S/14, the recipe's crops (2 x 224 +
8 x 98 px) and head sizes: ``shared``, K = 65,536 for DINO and iBOT in one 2048-256 head (vitb14_ablation's);
``separate``, DINO 2048-384-131,072 and iBOT 2048-256-131,072 (Midnight ViT-g's). Sinkhorn-Knopp, KoLeo 0.1
(DINOv2 has no KDE, so KDE is 0), iBOT masking probability 0.5 at ratios 0.1-0.5, drop path 0, fp32.

* pathfm: :func:`pathfm.ssl.training_step.training_step`, the function the trainer calls for each step
  (benchmarks/step_trace.py: ``PathfmStepper.step_result``), alternately with and without the ``diag/*``
  signals the trainer computes on logged steps; the diagnostics' own CPU time is also timed directly
  (``step_diagnostics``, ``dino_ce_per_pair``).
* DINOv2: its ``SSLMetaArch.forward_backward``, per-submodule clipping, its AdamW (its parameter groups and
  schedules) and the EMA, imported from a checkout by benchmarks/dinov2_step_parity.py (which lists the
  stand-ins for its CUDA-only parts; attention runs as SDPA within each sequence, as xformers computes it),
  without the parity check's hooks and gradient copies.

Each side runs in its own fresh process on one thread (its peak RSS is its own ``ru_maxrss``); the driver
alternates them, one step at a time (pathfm with diagnostics, DINOv2, pathfm without, ...), and reports the
median CPU-seconds (``time.process_time``) per step over ``--rounds`` rounds after ``--warmup`` rounds,
their ratio, and the machine's load. Without a DINOv2 checkout (``--dinov2`` or $PATHFM_DINOV2_CHECKOUT)
only pathfm's side runs and the DINOv2 columns say why they are empty.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from step_trace import PARITY_CASES, PathfmStepper, fixed_crops, step_masks  # beside this script

HEADS = {
    "shared": {"dino_head": {"n_prototypes": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "n_layers": 3},
               "ibot_head": {"n_prototypes": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "n_layers": 3},
               "loss.separate_ibot_head": False},
    "separate": {"dino_head": {"n_prototypes": 131072, "hidden_dim": 2048, "bottleneck_dim": 384, "n_layers": 3},
                 "ibot_head": {"n_prototypes": 131072, "hidden_dim": 2048, "bottleneck_dim": 256, "n_layers": 3},
                 "loss.separate_ibot_head": True},
}  # fmt: skip
RECIPE = {"model.arch": "vit_small", "data.crops.global_size": 224, "data.crops.local_size": 98,
          "data.crops.n_local": 8, "loss.mask_probability": 0.5, "loss.mask_ratio": [0.1, 0.5]}  # fmt: skip
QUICK = {"data.batch_size": 2, "dino_head": PARITY_CASES["midnight"]["dino_head"],
         "ibot_head": PARITY_CASES["midnight"]["ibot_head"]}  # fmt: skip
DINOV2_ENV = "PATHFM_DINOV2_CHECKOUT"


def bench_config(heads: str, batch: int, quick: bool):
    """The midnight parity case (Sinkhorn-Knopp, LayerScale 1e-5, KoLeo, no KDE) at the recipe's sizes."""
    from pathfm.config import load_config

    over: dict[str, Any] = {**PARITY_CASES["midnight"], **HEADS[heads], "optim.steps": 1000,
                            "optim.freeze_last_layer_steps": 0, "data.batch_size": batch}  # fmt: skip
    over.update(QUICK if quick else RECIPE)
    if quick:
        over["loss.separate_ibot_head"] = HEADS[heads]["loss.separate_ibot_head"]
    return load_config("smoke", over)


# --------------------------------------------------------------------------------------- one side
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


class DiagTimer:
    """CPU time spent in the step's diagnostics, by wrapping the two functions training_step calls."""

    def __init__(self) -> None:
        import pathfm.ssl.training_step as ts

        self.cpu_s = 0.0
        for name in ("step_diagnostics", "dino_ce_per_pair"):
            setattr(ts, name, self._timed(getattr(ts, name)))

    def _timed(self, fn):
        def wrapper(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.cpu_s += time.process_time() - t0

        return wrapper


def worker(side: str, heads: str, batch: int, quick: bool, dinov2: str | None) -> None:
    """Build one side, say ``ready``, then run one step per ``step [diag]`` line of stdin, answering JSON."""
    torch.set_num_threads(1)
    cfg = bench_config(heads, batch, quick)
    crops = fixed_crops(cfg, 1)
    stepper = PathfmStepper.build(cfg)
    timer = DiagTimer()
    run = None
    if side == "dinov2":
        from dinov2_step_parity import DinoV2Side, copy_weights_into_dinov2, import_dinov2, init_one_process_group

        d2 = import_dinov2(Path(dinov2))
        init_one_process_group()
        theirs = DinoV2Side(d2, cfg, observe=False)
        copy_weights_into_dinov2(stepper, theirs.model)
        theirs.build_optimizer()
        del stepper  # only DINOv2's model stays in this process
        gc.collect()

        def run(diag: bool) -> float:
            out = theirs.run_step(*crops, step_masks(cfg, theirs.step)[0], keep_grads=False)
            return sum(out["losses"].values())
    else:

        def run(diag: bool) -> float:
            r = stepper.step_result(*crops, diagnose=diag)
            return sum(r.values[k] for k in ("dino_local", "dino_global", "ibot", "koleo"))

    print(json.dumps({"ready": True, "rss_mb": peak_rss_mb()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        diag = line.split()[1:] == ["diag"]
        timer.cpu_s = 0.0
        t0 = time.process_time()
        loss = run(diag)
        cpu = time.process_time() - t0
        print(json.dumps({"cpu_s": cpu, "diag_cpu_s": timer.cpu_s, "loss": loss, "peak_rss_mb": peak_rss_mb()}),
              flush=True)


# ----------------------------------------------------------------------------------------- driver
class Side:
    def __init__(self, side: str, args: argparse.Namespace, heads: str) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--heads", heads,
               "--batch", str(args.batch)] + (["--quick"] if args.quick else []) + (
              ["--dinov2", str(args.dinov2)] if args.dinov2 else [])  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.name = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def answer(self) -> dict:
        for line in self.proc.stdout:  # libraries may print other lines first
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the {self.name} worker ended ({self.proc.wait()}); its error is above")

    def step(self, diag: bool = False) -> dict:
        self.proc.stdin.write("step diag\n" if diag else "step\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def measure(args: argparse.Namespace, heads: str) -> dict[str, Any]:
    sides = {"pathfm": Side("pathfm", args, heads)}
    if args.dinov2:
        sides["dinov2"] = Side("dinov2", args, heads)
    try:
        for s in sides.values():
            s.answer()  # ready
        runs: dict[str, list[dict]] = {"pathfm_diag": [], "dinov2": [], "pathfm": []}
        for r in range(args.warmup + args.rounds):
            got = {"pathfm_diag": sides["pathfm"].step(diag=True)}
            if "dinov2" in sides:
                got["dinov2"] = sides["dinov2"].step()
            got["pathfm"] = sides["pathfm"].step(diag=False)
            if r == 0:
                first_loss = {k: v["loss"] for k, v in got.items()}
            if r >= args.warmup:
                for k, v in got.items():
                    runs[k].append(v)
            print(f"  {heads} round {r + 1}{' (warm-up)' if r < args.warmup else ''}: "
                  + "  ".join(f"{k} {v['cpu_s']:.2f} CPU-s" for k, v in got.items()), flush=True)  # fmt: skip
    finally:
        for s in sides.values():
            s.close()
    med = {k: statistics.median(v["cpu_s"] for v in vals) for k, vals in runs.items() if vals}
    out: dict[str, Any] = {
        "heads": heads, "cpu_s": med, "all_cpu_s": {k: [v["cpu_s"] for v in vals] for k, vals in runs.items()},
        "peak_rss_mb": {k: vals[-1]["peak_rss_mb"] for k, vals in runs.items() if vals},
        "diag_cpu_s": statistics.median(v["diag_cpu_s"] for v in runs["pathfm_diag"]), "first_step_loss": first_loss,
    }  # fmt: skip
    out["diag_share"] = out["diag_cpu_s"] / med["pathfm_diag"]
    if "dinov2" in med:
        out["time_ratio"] = {k: med[k] / med["dinov2"] for k in ("pathfm_diag", "pathfm")}
        out["memory_ratio"] = out["peak_rss_mb"]["pathfm_diag"] / out["peak_rss_mb"]["dinov2"]
    return out


def report(results: list[dict], args: argparse.Namespace, load: tuple, load_end: tuple) -> None:
    print(f"\nload average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load)}, at end "
          f"{'/'.join(f'{x:.2f}' for x in load_end)}; one thread per side; batch {args.batch}; "
          f"median of {args.rounds} alternated rounds after {args.warmup} warm-up")  # fmt: skip
    if not args.dinov2:
        print(f"DINOv2 side skipped: no checkout given (--dinov2 or ${DINOV2_ENV}); its columns are '-'")
    print("| heads | pathfm + diag CPU-s | pathfm CPU-s | DINOv2 CPU-s | ratio (+diag / without) "
          "| diag CPU-s (% of step) | peak RSS MB pathfm / DINOv2 (ratio) | step-1 loss pathfm / DINOv2 |")
    for r in results:
        c, m, loss = r["cpu_s"], r["peak_rss_mb"], r["first_step_loss"]
        if "dinov2" in c:
            theirs = f"{c['dinov2']:.3f} | {r['time_ratio']['pathfm_diag']:.3f} / {r['time_ratio']['pathfm']:.3f}"
            mem = f"{m['pathfm_diag']:,.0f} / {m['dinov2']:,.0f} ({r['memory_ratio']:.3f})"
            loss_cell = f"{loss['pathfm_diag']:.6f} / {loss['dinov2']:.6f}"
        else:
            theirs, mem, loss_cell = "- | -", f"{m['pathfm_diag']:,.0f} / -", f"{loss['pathfm_diag']:.6f} / -"
        print(f"| {r['heads']} | {c['pathfm_diag']:.3f} | {c['pathfm']:.3f} | {theirs} "
              f"| {r['diag_cpu_s']:.4f} ({100 * r['diag_share']:.2f} %) | {mem} | {loss_cell} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dinov2", default=os.environ.get(DINOV2_ENV) or None,
                    help=f"a facebookresearch/dinov2 source checkout (default: ${DINOV2_ENV})")
    ap.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=["shared", "separate"])
    ap.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="pico ViT, 42/28 px crops, K = 64: 1 round, no warm-up")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", choices=["pathfm", "dinov2"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.heads[0], args.batch, args.quick, args.dinov2)
    if args.quick:
        args.rounds, args.warmup, args.batch = 1, 0, 2
    if args.dinov2 and not (Path(args.dinov2) / "dinov2" / "train" / "ssl_meta_arch.py").is_file():
        ap.error(f"{args.dinov2} is not a facebookresearch/dinov2 checkout (no dinov2/train/ssl_meta_arch.py)")
    load = os.getloadavg()
    results = [measure(args, h) for h in args.heads]
    report(results, args, load, os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps({"load_start": load, "batch": args.batch, "results": results}, indent=1))


if __name__ == "__main__":
    main()
