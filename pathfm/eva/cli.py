"""``pathfm eva config|run SOURCE --task TASK``: evaluate a backbone with kaiko's eva (the Midnight paper's
framework), on eva's pathology tasks (data on disk) or on a pathfm tile task (``pathfm:crc``).

Examples::

    pathfm eva config runs/b14 --task crc --data-root /data/crc      # writes runs/b14/eva/crc/eva.yaml
    eva predict_fit --config runs/b14/eva/crc/eva.yaml                # ... run by eva's own CLI
    pathfm eva run runs/b14 --task pathfm:crc --baseline              # run here, rows -> runs/b14/eval.parquet
    pathfm eva run hf:hub/midnight --task patch_camelyon --data-root /data --out results/midnight

Needs ``pip install 'pathfm[eva]'``. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse

from pathfm.records.run_folder import EVA_DIR, EVAL_FILE


def register(subparsers) -> None:
    p = subparsers.add_parser("eva", help="evaluate a backbone with kaiko's eva (Midnight's framework)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="eva_cmd", metavar="CMD")
    sub.required = True
    for name, what in (("config", "write the eva YAML config"), ("run", "write it, run eva, collect its results")):
        q = sub.add_parser(name, help=what)
        q.add_argument("source", help="run dir, teacher_backbone.pt, hf:<dir> or timm:<name>:<file>")
        q.add_argument("--task", required=True,
                       help="bach, crc, mhist, patch_camelyon (need --data-root), or pathfm:<task> (e.g. pathfm:crc)")
        q.add_argument("--data-root", default=None, help="folder holding the unpacked eva dataset")
        q.add_argument("--out", default=None, help=f"output folder (default: RUN/{EVA_DIR}/<task>, else ./{EVA_DIR}/<task>)")
        q.add_argument("--pooling", default="cls+mean", choices=["cls+mean", "cls", "mean"])
        q.add_argument("--n-runs", type=int, default=5, help="heads eva trains (eva: 5; one initial head cloned, they differ in batch order)")
        q.add_argument("--max-steps", type=int, default=12500, help="head training steps (eva: 12500)")
        q.add_argument("--fold", type=int, default=0, help="pathfm:<task>: which of pathfm's folds")
        q.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
        q.add_argument("--random-init-seed", type=int, default=None,
                       help="evaluate the same architecture randomly initialised with this seed instead")
        if name == "run":
            q.add_argument("--baseline", action="store_true",
                           help="also evaluate the random-init baseline (the seed of pathfm eval's baseline) and "
                           "store it as backbone=random_init")
            q.add_argument("--results", default=None,
                           help=f"Parquet file the rows are merged into (default: RUN/{EVAL_FILE}, else OUT/{EVAL_FILE})")  # fmt: skip
        q.set_defaults(func=handle)


def _out_dir(args) -> "Path":
    from pathlib import Path

    from pathfm.records import RunFolder

    if args.out:
        return Path(args.out)
    src = Path(args.source)
    base = src if src.is_dir() else (src.parent if src.is_file() else Path("."))
    return RunFolder(base).eva_dir(args.task)


def handle(args: argparse.Namespace) -> int:
    from pathfm.eva.config import eva_config, write_eva_config

    out = _out_dir(args)
    common = dict(data_root=args.data_root, pooling=args.pooling, n_runs=args.n_runs, max_steps=args.max_steps,
                  fold=args.fold, num_workers=args.num_workers)
    from pathfm.eval.backbones import RANDOM_INIT_SEED

    baseline = args.eva_cmd == "run" and args.baseline
    seeds = [args.random_init_seed] + ([RANDOM_INIT_SEED] if baseline else [])
    jobs = []
    for seed in seeds:
        sub = out if seed is None else out / f"random_init_{seed}"
        cfg = eva_config(args.source, args.task, out_dir=sub, random_init_seed=seed, **common)
        path = write_eva_config(cfg, sub / "eva.yaml")
        jobs.append((seed, path))
        print(f"wrote {path}" + ("" if args.eva_cmd == "run" else f"\nrun it with: eva predict_fit --config {path}"))
    if args.eva_cmd == "config":
        return 0
    from pathlib import Path

    from pathfm.eva.results import eva_rows, run_eva
    from pathfm.eval.sources import load_source
    from pathfm.records import RunFolder
    from pathfm.results import append_results, eval_frame

    bb = load_source(args.source)
    rows = []
    for seed, path in jobs:
        print(f"running eva on {path} ...", flush=True)
        results = run_eva(path)
        rows += eva_rows(results, source=str(args.source), backbone="trained" if seed is None else "random_init",
                         task=args.task, step=bb.step)
        print(f"eva results: {results}")
    dest = Path(args.results) if args.results else RunFolder(bb.run_dir or out).eval
    append_results(dest, eval_frame(rows))
    for r in rows:
        if r["metric"] == "balanced_accuracy":
            print(f"  {r['backbone']:12s} {r['task']:24s} run {r['fold']}: balanced_accuracy {r['value']:.4f}")
    print(f"{len(rows)} rows merged into {dest}")
    return 0
