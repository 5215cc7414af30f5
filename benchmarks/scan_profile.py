"""CPU seconds per slide of ``pathfm data scan`` (one :func:`pathfm.data.scan.scan_one` each), and where they go.

    PYTHONPATH=. python benchmarks/scan_profile.py [--reps 5] [--profile]

Per bundled slide: ``time.process_time`` of ``--reps`` scans after one warm-up (open, metadata, the
1024 px tissue-mask thumbnail) and how its level was decoded; the mean over the three slides is the figure
docs/benchmarks.md compares.
``--profile`` adds cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
ROOT = Path(__file__).resolve().parents[1]
SLIDES = [ROOT / "samples" / "wsi" / n for n in
          ("CMU-1-Small-Region.svs", "CMU-1-Small-Region.generic-tiled-pyramid.tiff", "TCGA-CR-7395-01A-01-TS1.svs")]


def main() -> None:
    import cv2

    from pathfm.config import TissueFilterConfig
    from pathfm.data.hsv import HSVFilter
    from pathfm.data.manifest import SlideEntry
    from pathfm.data.readers import ReaderOptions
    from pathfm.data.scan import scan_one

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = TissueFilterConfig()
    hsv = HSVFilter.from_config(cfg)
    entries = [SlideEntry(path=str(p), slide_id=p.stem) for p in SLIDES]

    def scan(e):
        status, row = scan_one(e, hsv, cfg.thumbnail_size, 0.5, ReaderOptions(), Path.cwd())
        assert status == "ok", row
        return row

    def route(e) -> str:
        """How the scan's thumbnail level is decoded: reduced from the tiles (at 1/2**s) or read in full."""
        from pathfm.data.readers import open_reader, thumbnail_size
        from pathfm.data.reduced_decode import reduction_shift

        reader = open_reader(e.path)
        size = (cfg.thumbnail_size, cfg.thumbnail_size)
        level = reader.thumbnail_level(size)
        dims = reader.level_dimensions[level]
        target = thumbnail_size(dims, size)
        if reader.read_level_reduced(level, target) is None:
            return f"level {level} {dims[0]}x{dims[1]} read in full"
        return f"level {level} {dims[0]}x{dims[1]} decoded at 1/{1 << reduction_shift(dims, target)}"

    per = []
    for e in entries:
        scan(e)
        t = time.process_time()
        for _ in range(args.reps):
            row = scan(e)
        per.append((time.process_time() - t) / args.reps)
        print(f"{e.slide_id:48s} {per[-1]:.3f} CPU-s  tissue_fraction {row['tissue_fraction']}  ({route(e)})")
    print(f"mean {sum(per) / len(per):.3f} CPU-s per slide -> {len(per) / sum(per):.1f} slides per CPU-s")
    if args.profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for e in entries:
            scan(e)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
