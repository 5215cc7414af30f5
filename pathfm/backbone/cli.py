"""``pathfm weights fetch dinov2:NAME [--dir DIR] [--sha256 HEX]``: download and verify an ImageNet DINOv2 backbone."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("weights", help="fetch ImageNet DINOv2 backbones for model.init_from (checksum-verified)")
    sub = p.add_subparsers(dest="weights_cmd", metavar="CMD")
    sub.required = True
    f = sub.add_parser("fetch", help="download dinov2:NAME into $PATHFM_WEIGHTS_DIR (else torch hub's cache) and "
                       "verify its pinned sha256; a file already there is verified, not fetched again")
    f.add_argument("name", help="dinov2:vits14 ... dinov2:vitg14_reg4")
    f.add_argument("--dir", default=None, help="destination folder (default: $PATHFM_WEIGHTS_DIR, else torch hub's cache)")
    f.add_argument("--sha256", default=None, help="expected digest, for a name without a pinned one")
    f.add_argument("--url", default=None, help="download from this address (a mirror, file://...) instead")
    f.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    from pathfm.backbone.weights_download import fetch_dinov2

    path = fetch_dinov2(args.name, args.dir, args.sha256, args.url)
    print(f"{args.name}: {path} (sha256 verified); use model.init_from={args.name}")
    return 0
