"""``pathfm`` — one command with verbs: data, train, eval, sweep, ablate, analyze, audit, export.

Each verb lives in its subpackage (``pathfm/<part>/cli.py``) and exposes ``register(subparsers)``; those
modules import nothing heavy at module level, so ``pathfm --help`` is instant. User errors
(:class:`pathfm.errors.PathfmError`) print one clear message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pathfm import __version__
from pathfm.errors import PathfmError, TrainingInterrupted

VERBS = {
    "data": "pathfm.data.cli",
    "train": "pathfm.ssl.cli",
    "weights": "pathfm.backbone.cli",
    "eval": "pathfm.eval.cli",
    "sweep": "pathfm.sweeps.cli",
    "ablate": "pathfm.ablations.cli",
    "analyze": "pathfm.analysis.cli",
    "audit": "pathfm.eval.audit_cli",
    "export": "pathfm.export.cli",
    "eva": "pathfm.eva.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pathfm",
        description="Train, evaluate, sweep and analyse pathology foundation models (Midnight recipe).",
    )
    parser.add_argument("--version", action="version", version=f"pathfm {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, module in VERBS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:  # a part not built yet
            if e.name != module:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except PathfmError as e:
        print(f"pathfm {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"pathfm {args.verb}: {e}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pathfm ... | head`: the reader left; no traceback (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
