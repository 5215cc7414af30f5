"""``pathfm export RUN --average-last K``: an exported backbone averaged over the run's last K checkpoints.

Examples::

    pathfm export runs/cpu --average-last 3                  # -> runs/cpu/teacher_backbone_avg3.pt
    pathfm export runs/x --average-last 4 --stage highres --out x_hr_avg4.pt
    pathfm eval runs/cpu/teacher_backbone_avg3.pt --task crc # evaluate it like teacher_backbone.pt
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a backbone averaged over a run's last K checkpoints (teacher weights)",
        description=__doc__.split("Examples::", 1)[0], epilog=__doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="a run directory with checkpoints/")
    p.add_argument("--average-last", type=int, required=True, metavar="K",
                   help="average the teacher backbones of the newest K checkpoints (needs run.keep_checkpoints>=K)")
    p.add_argument("--stage", choices=("main", "highres"), default=None,
                   help="which stage's checkpoints (default: the stage of the newest checkpoint)")
    p.add_argument("--out", default=None, help="output file (default: RUN/teacher_backbone_avg<K>[_highres].pt)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from pathfm.ssl.averaging import export_average

    path = export_average(args.run_dir, args.average_last, args.out, args.stage)
    print(f"averaged the last {args.average_last} checkpoint(s): {path}")
    return 0
