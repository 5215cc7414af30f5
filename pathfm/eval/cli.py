"""``pathfm eval SOURCE --task NAME ...``: frozen-feature evaluation from the command line.

Examples::

    pathfm eval runs/smoke --task crc                      # run dir: uses its teacher_backbone.pt
    pathfm eval runs/smoke/teacher_backbone.pt --task crc --task osteo --probe linear --probe knn
    pathfm eval timm:vit_small_patch14_dinov2 --task my_task.yaml --out results/eval.parquet
    pathfm eval hf:runs/smoke/export/hf --task crc          # a Hugging Face folder (pathfm export --format hf)
    pathfm eval timm:vit_small_patch14_dinov2:runs/b/export/timm/model.safetensors --task crc
    pathfm eval --list-tasks
"""

from __future__ import annotations

import argparse

from pathfm.records.run_folder import EVAL_FILE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate frozen features (linear probe / kNN) on labelled tile tasks, beside baselines",
        description="Frozen-feature evaluation: features of the backbone on each task, probed fold by fold\n"
        "(balanced accuracy, accuracy, macro-F1), beside the same probe on a random init of the same\n"
        f"architecture and on colour histograms. Rows are appended to <run_dir>/{EVAL_FILE}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("source", nargs="?", help="run dir, teacher_backbone.pt / checkpoint, timm:<name>, timm:<name>:<file> or hf:<dir>")
    p.add_argument("--task", action="append", dest="tasks", metavar="NAME",
                   help="bundled task (crc, crc_crops, crc9, osteo, pcam; see --list-tasks) or a task .yaml/.csv; "
                   "repeat or comma-separate (default: crc,osteo)")
    p.add_argument("--probe", action="append", dest="probes", metavar="PROBE",
                   help="linear, knn or torch_linear; repeat or comma-separate (default: linear,knn)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fold / probe seeds (default: 0)")
    p.add_argument("--folds", type=int, default=None, help="override the task's number of folds")
    p.add_argument("--pooling", default="cls+mean", choices=["cls+mean", "cls", "mean"],
                   help="embedding: CLS, mean of patch tokens, or both concatenated (default, as Midnight)")
    p.add_argument("--resize", default=None,
                   help="resize tiles to PIXELS, or 'model' for the backbone's training resolution")
    p.add_argument("--no-baselines", action="store_true", help="skip the random-init and colour baselines")
    p.add_argument("--out", default="auto", help=f"Parquet file to append rows to (default: <run_dir>/{EVAL_FILE})")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list-tasks", action="store_true", help="list the bundled tasks and exit")
    p.set_defaults(func=run)


def _split(values: list[str] | None, default: tuple[str, ...]) -> list[str]:
    if not values:
        return list(default)
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def run(args) -> int:
    from pathfm.errors import PathfmError

    if args.list_tasks:
        from pathfm.eval.tasks import BUNDLED, get_task, task_summary

        for name, spec in BUNDLED.items():
            t = task_summary(get_task(name))
            folds = f"{t['n_folds']} folds" + (f" over {t['groups']} groups" if t["groups"] else "")
            print(f"{name:10s} {t['tiles']} tiles x {t['crops_per_side'] ** 2} crops, {len(t['classes'])} classes, "
                  f"{t['input_size']} px, {t['split']} ({folds})\n           {spec['description']}")
        return 0
    if not args.source:
        raise PathfmError("give a SOURCE to evaluate: a run dir, a teacher_backbone.pt, or timm:<name>")
    resize = args.resize
    if resize is not None and resize != "model":
        try:
            resize = int(resize)
        except ValueError:
            raise PathfmError(f"--resize must be a number of pixels or 'model', got {resize!r}") from None
    from pathfm.eval.evaluation import DEFAULT_TASKS, evaluate

    df = evaluate(
        args.source,
        tasks=_split(args.tasks, DEFAULT_TASKS),
        probes=_split(args.probes, ("linear", "knn")),
        seeds=args.seeds,
        baselines=not args.no_baselines,
        pooling=args.pooling,
        resize=resize,
        n_folds=args.folds,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=None if args.no_cache else "auto",
        output=None if args.out in ("none", "") else args.out,
        progress=not args.no_progress,
        verbose=True,
    )
    _log_to_tracking(args.source, df)
    return 0


def _log_to_tracking(source: str, df) -> None:
    """A run directory whose config has a ``tracking`` section gets the table in its tracked run(s)."""
    from pathlib import Path

    from pathfm.records import RunFolder

    run_dir = Path(source)
    if not RunFolder(run_dir).config.is_file():
        return
    from pathfm.config import load_config
    from pathfm.tracking import log_evaluation

    cfg = load_config(RunFolder(run_dir).config)
    if cfg.tracking.enabled:
        log_evaluation(cfg, run_dir, df)
        print(f"logged the evaluation table to {', '.join(sorted(cfg.tracking.model_dump(exclude_none=True)))}")
