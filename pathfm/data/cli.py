"""``pathfm data scan DIR_OR_MANIFEST`` and ``pathfm data preview SLIDE --out sheet.png``."""

from __future__ import annotations

import argparse
import os
import sys

#: above this many slides the scan prints the per-cohort summary instead of one line per slide
LIST_SLIDES_UP_TO = 50


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="scan slides into a manifest; preview the tissue filter and HED")
    sub = p.add_subparsers(dest="data_cmd", metavar="CMD")
    sub.required = True

    s = sub.add_parser("scan", help="open every slide, record dimensions/levels/mpp/tissue, write a manifest")
    s.add_argument("source", help="a folder of slides (and DICOM folders), an existing manifest (.csv/.parquet) "
                   "or a .txt list of slide paths/URLs (file://, s3://, gs://, ...), one per line")
    s.add_argument("--out", default="slides.csv", help="manifest to write (.csv or .parquet; default slides.csv)")
    s.add_argument("--assume-mpp", type=float, default=None,
                   help="resolution (um/px) for slides without metadata; recorded as mpp_source=assume_mpp")
    s.add_argument("--skip-bad", action="store_true", help="write the manifest without unreadable slides")
    s.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="processes opening slides in parallel (default: CPU cores, at most 8)")
    s.add_argument("--reader", default="auto",
                   help="slide backend: auto (default: openslide for local files, tiffslide for URLs, wsidicom "
                   "for DICOM folders), openslide, tiffslide or wsidicom")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_scan)

    t = sub.add_parser("stain-stats", help="fit RandStainNA's dataset-level colour statistics from training tiles")
    t.add_argument("--config", default="smoke", help="preset or YAML whose data section draws the tiles (default smoke)")
    t.add_argument("--n-tiles", type=int, default=200, help="tiles to draw (default 200)")
    t.add_argument("--color-space", default="lab", choices=("lab", "hsv"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="YAML to write; use it as data.stain_aug.randstainna.stats")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.set_defaults(func=_stain_stats)

    v = sub.add_parser("preview", help="PNG contact sheet: accepted vs rejected tiles, HED strengths")
    v.add_argument("slide", help="a slide file")
    v.add_argument("--out", required=True, help="PNG to write")
    v.add_argument("--config", default="smoke", help="preset or YAML whose data section is used (default smoke)")
    v.add_argument("--target-mpp", type=float, default=None, help="tile resolution (default: finest usable of data.mpps)")
    v.add_argument("--mpp", type=float, default=None, help="level-0 um/px of this slide (overrides metadata)")
    v.add_argument("--n", type=int, default=8, help="tiles per row")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable, e.g. --set data.tissue.min_tissue_fraction=0.4")
    v.set_defaults(func=_preview)


def _scan(args: argparse.Namespace) -> int:
    from pathfm.data.scan import scan_slides

    if args.assume_mpp is not None and args.assume_mpp <= 0:
        from pathfm.errors import PathfmError

        raise PathfmError(f"--assume-mpp must be > 0, got {args.assume_mpp}")
    from pathfm.data.readers import READERS, ReaderOptions
    from pathfm.data.scan import cohort_summary
    from pathfm.errors import PathfmError

    if args.workers < 1:
        raise PathfmError(f"--workers must be >= 1, got {args.workers}")
    if args.reader not in READERS:
        raise PathfmError(f"--reader must be one of {', '.join(READERS)}, got {args.reader!r}")
    report = scan_slides(args.source, args.out, assume_mpp=args.assume_mpp, skip_bad=args.skip_bad,
                         progress=not args.no_progress, workers=args.workers,
                         options=ReaderOptions(reader=args.reader))
    for c in cohort_summary(report.rows):
        hist = ", ".join(f"{k}: {v}" for k, v in c["mpp_histogram"].items())
        print(f"cohort {c['cohort']}: {c['slides']} slide(s), tissue {c['tissue_area_mm2']:.1f} mm2, mpp {{{hist}}}")
    for r in report.rows[:LIST_SLIDES_UP_TO]:
        mpp = "-" if r["mpp"] is None else f"{r['mpp']:.4g}"
        area = "-" if r["tissue_area_mm2"] is None else f"{r['tissue_area_mm2']:.2f} mm2"
        print(f"{r['slide_id']:<45} {r['width']}x{r['height']:<7} levels={r['levels']} mpp={mpp:<7} "
              f"({r['mpp_source']}) tissue={r['tissue_fraction']:.0%} {area}")
    print(report.summary(), file=sys.stderr)
    if report.rows:
        print(f"wrote {args.out}")
    return 0


def _stain_stats(args: argparse.Namespace) -> int:
    from pathfm.config import load_config
    from pathfm.data.stain_stats import fit_stain_stats_from_config
    from pathfm.errors import PathfmError

    if args.n_tiles < 2:
        raise PathfmError(f"--n-tiles must be >= 2, got {args.n_tiles}")
    stats = fit_stain_stats_from_config(load_config(args.config, args.overrides), args.n_tiles, args.color_space,
                                        args.seed)
    stats.save(args.out)
    print(f"wrote {args.out}: {stats.n_images} tiles, {stats.color_space} means {stats.mean_of_means}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from pathfm.config import load_config
    from pathfm.data.preview import make_preview

    cfg = load_config(args.config, args.overrides)
    res = make_preview(args.slide, args.out, cfg.data, target_mpp=args.target_mpp, mpp=args.mpp, n_each=args.n,
                       seed=args.seed)
    print(f"wrote {res['out']} ({res['accepted']} accepted, {res['rejected']} rejected tiles shown)")
    return 0
