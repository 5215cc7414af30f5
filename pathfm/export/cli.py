"""``pathfm export RUN [--format pathfm|timm|hf|dinov2] [--out DIR] [--img-size PX] [--license ID]
[--average-last K [--stage main|highres]]``.

Examples::

    pathfm export runs/b14 --format timm      # runs/b14/export/timm: config.json, model.safetensors, README.md
    pathfm export runs/b14 --format hf --out hub/my-model
    pathfm export runs/b14 --format dinov2    # official DINOv2 hub key layout
    pathfm export runs/b14/checkpoints/step_00001000.pt --format hf   # an unfinished run: name the file
    pathfm export runs/cpu --average-last 3   # runs/cpu/teacher_backbone_avg3.pt: the last 3 teachers averaged
    pathfm export runs/cpu --average-last 3 --format hf   # ... and that average exported for transformers

Nothing heavy is imported at module level (``pathfm --help`` stays instant).
"""

from __future__ import annotations

import argparse

from pathfm.records.run_folder import EXPORT_DIR


def register(subparsers: argparse._SubParsersAction) -> None:
    from pathfm.export.run import DEFAULT_LICENSE, FORMATS  # light: no torch at import

    p = subparsers.add_parser(
        "export",
        help="export a run's teacher backbone for timm, Hugging Face transformers or DINOv2, with a model card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="RUN", help="a finished run dir, or a teacher_backbone.pt / checkpoint file")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="pathfm", help="output layout (default: pathfm)")
    p.add_argument("--out", default=None, help=f"output folder (default: RUN/{EXPORT_DIR}/<format>)")
    p.add_argument("--img-size", type=int, default=None,
                   help="image size the timm/hf export is exact at (default: the run's training resolution)")  # fmt: skip
    p.add_argument("--license", dest="license_id", default=DEFAULT_LICENSE,
                   help=f"license in the model card's front matter (default: {DEFAULT_LICENSE})")  # fmt: skip
    p.add_argument("--average-last", type=int, default=None, metavar="K",
                   help="first average the teacher backbones of the run's newest K checkpoints (written to "
                   "RUN/teacher_backbone_avg<K>.pt; needs run.keep_checkpoints >= K), then export that average")
    p.add_argument("--stage", choices=("main", "highres"), default=None,
                   help="with --average-last: which stage's checkpoints (default: the newest checkpoint's)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from pathfm.errors import PathfmError
    from pathfm.export.run import export_run

    source = args.source
    if args.stage is not None and args.average_last is None:
        raise PathfmError("--stage only applies with --average-last K")
    if args.average_last is not None:
        from pathfm.backbone.averaging import export_average

        source = export_average(args.source, args.average_last, None, args.stage)
        print(f"averaged the last {args.average_last} checkpoint(s): {source}")
        if args.fmt == "pathfm" and args.out is None:
            return 0  # the averaged backbone file is the pathfm-format export
    res = export_run(source, args.fmt, args.out, img_size=args.img_size, license_id=args.license_id)
    print(f"exported {res.fmt} ({res.name}, exact at {res.img_size} px) to {res.out_dir}:")
    for f in res.files:
        print(f"  {f.name}")
    return 0
