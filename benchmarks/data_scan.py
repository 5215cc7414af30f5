"""``pathfm data scan`` throughput on a cohort-sized folder, with the serial scan measured in the same run.

    .venv/bin/python benchmarks/data_scan.py [--n 1000] [--workers 2] [--serial-n 200]
    .venv/bin/python benchmarks/data_scan.py --quick     # 12 entries, serial baseline on 6

The folder holds ``--n`` symlinks (``slide_0000.svs`` ...) cycling over the three bundled slides, so every
entry is opened, measured and tissue-masked exactly as a real slide (a 1024 px thumbnail each). Rows:
the serial scan (one process, the baseline; on the first ``--serial-n`` entries, as its per-slide cost
does not depend on the folder size) and the process-pool scan of all ``--n`` entries with ``--workers``,
both writing the manifest with its journal; slides/s is wall clock (the pool's whole point is wall time), CPU load
printed beside it because other jobs may share the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SLIDES = [ROOT / "samples" / "wsi" / n for n in
          ("CMU-1-Small-Region.svs", "CMU-1-Small-Region.generic-tiled-pyramid.tiff", "TCGA-CR-7395-01A-01-TS1.svs")]


def make_cohort(folder: Path, n: int) -> None:
    """``n`` symlinks to the bundled slides, keeping each target's suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = SLIDES[i % len(SLIDES)]
        (folder / f"slide_{i:04d}{target.suffix}").symlink_to(target)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_scan(folder: Path, out: Path, workers: int) -> tuple[float, float, int]:
    """(wall s, CPU s, slides) of one scan."""
    from pathfm.data.scan import scan_slides

    t0, c0 = time.perf_counter(), cpu_seconds()
    report = scan_slides(folder, out, assume_mpp=0.5, progress=False, workers=workers)
    return time.perf_counter() - t0, cpu_seconds() - c0, len(report.rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serial-n", type=int, default=200, help="entries of the serial baseline (0: all)")
    ap.add_argument("--quick", action="store_true", help="--n 12 --serial-n 6: a check that it runs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.serial_n = 12, 6
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cohort"
        make_cohort(folder, args.n)
        serial = Path(tmp) / "serial"
        make_cohort(serial, args.serial_n or args.n)
        print(f"{args.n} slide entries (symlinks to the 3 bundled slides), {os.cpu_count()} CPU(s), "
              f"load average {os.getloadavg()[0]:.1f}")
        rows = []
        for label, src, workers in (("serial scan (baseline)", serial, 1),
                                    (f"process pool, {args.workers} workers", folder, args.workers)):
            wall, cpu, n = timed_scan(src, Path(tmp) / f"slides_{workers}.csv", workers)
            rows.append((label, n / wall, wall))
            print(f"  {label:<32} {n} slides in {wall:6.1f} s = {n / wall:6.1f} slides/s, "
                  f"{cpu / n:.3f} CPU-s per slide (load average {os.getloadavg()[0]:.1f})", flush=True)
        print(f"speed-up of the pool over the serial scan: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
