"""``pathfm data scan``: open every slide, measure it, write the manifest.

All local slide files are checked to exist before any is opened; every slide that cannot be read is
reported together (nothing is written unless ``skip_bad``). Slides without resolution metadata are listed
with the fix and written with an empty ``mpp`` (fill it in, or train with ``data.assume_mpp``).

Slides are scanned by a process pool (``workers``). Each finished slide is appended at once to a journal
next to the output (``<out>.scan.jsonl``); a scan that is killed and started again with the same ``out``
skips the slides in the journal. The journal is removed when the manifest has been written.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.data.hsv import HSVFilter
from pathfm.data.manifest import SlideEntry, load_manifest, write_manifest
from pathfm.data.readers import ReaderOptions, is_remote
from pathfm.data.slides import MPP_FIX, SlideGeometry, open_slide, resolve_mpp
from pathfm.data.tissue import TissueMask
from pathfm.errors import SlideError

COLUMNS = ("path", "slide_id", "patient_id", "mpp", "cohort", "mpp_source", "width", "height", "levels",
           "level_downsamples", "vendor", "tissue_fraction", "tissue_area_mm2")


@dataclass
class ScanReport:
    rows: list[dict] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # error messages of unreadable slides
    no_mpp: list[str] = field(default_factory=list)  # slide ids without any resolution
    no_tissue: list[str] = field(default_factory=list)
    resumed: int = 0  # slides taken from the journal of an earlier, interrupted scan
    seconds: float = 0.0  # wall time of the slides opened in this call

    @property
    def slides_per_second(self) -> float:
        scanned = len(self.rows) + len(self.bad) - self.resumed
        return scanned / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        lines = [f"{len(self.rows)} slide(s) scanned ({self.slides_per_second:.1f} slides/s"
                 + (f"; {self.resumed} resumed from an interrupted scan" if self.resumed else "") + ")"]
        if self.bad:
            lines.append(f"{len(self.bad)} unreadable slide(s) skipped:\n  " + "\n  ".join(self.bad))
        if self.no_mpp:
            lines.append(f"{len(self.no_mpp)} slide(s) without resolution metadata: {', '.join(self.no_mpp)}; "
                         f"they are written with an empty mpp. To use them, {MPP_FIX}")
        if self.no_tissue:
            lines.append(f"{len(self.no_tissue)} slide(s) with no tissue in the thumbnail mask: {', '.join(self.no_tissue)}")
        return "\n".join(lines)


def cohort_summary(rows: list[dict]) -> list[dict]:
    """Per cohort: number of slides, total tissue area (mm2) and a histogram of level-0 mpp (rounded to
    0.01 um/px; ``missing`` for slides without one)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r.get("cohort") or "-"].append(r)
    out = []
    for cohort, rs in sorted(groups.items()):
        hist = Counter("missing" if r["mpp"] is None else f"{r['mpp']:.2f}" for r in rs)
        out.append({"cohort": cohort, "slides": len(rs),
                    "tissue_area_mm2": round(sum(r["tissue_area_mm2"] or 0.0 for r in rs), 2),
                    "mpp_histogram": dict(sorted(hist.items()))})
    return out


def manifest_path(path: Path | str, base: Path) -> str:
    """Relative to the manifest's folder when the slide lies below it, else absolute; URLs unchanged.
    Symlinks are kept as links (a folder of links lists each link, not its target)."""
    if is_remote(path):
        return str(path)
    path = Path(os.path.abspath(path))
    return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)


def scan_one(entry: SlideEntry, hsv: HSVFilter, thumbnail_size: int, assume_mpp: float | None,
             options: ReaderOptions, base: Path) -> tuple[str, dict | str]:
    """("ok", manifest row) or ("bad", message) for one slide; a pure function of the slide's bytes."""
    try:
        slide = open_slide(entry.path, options)
    except SlideError as err:
        return "bad", str(err)
    try:
        meta = slide.mpp
        geometry = SlideGeometry.of(slide)
        mask = TissueMask.from_slide(slide, hsv, thumbnail_size)
        vendor = slide.vendor
    except Exception as err:  # noqa: BLE001 - any read failure makes the slide unusable
        return "bad", f"{entry.path}: {slide.backend} failed while reading the slide: {err}"
    finally:
        slide.close()
    try:
        mpp, src = resolve_mpp(entry.path, meta, entry.mpp, assume_mpp)
    except SlideError:  # no resolution anywhere: reported, not fatal, in a scan
        mpp, src = None, "missing"
    frac = mask.fraction
    area = None if mpp is None else frac * geometry.width * geometry.height * (mpp / 1000.0) ** 2
    return "ok", {
        "path": manifest_path(entry.path, base), "slide_id": entry.slide_id, "patient_id": entry.patient_id,
        "mpp": None if mpp is None else round(float(mpp), 6), "cohort": entry.cohort, "mpp_source": src,
        "width": geometry.width, "height": geometry.height, "levels": len(geometry.level_downsamples),
        "level_downsamples": ";".join(f"{d:.4g}" for d in geometry.level_downsamples), "vendor": vendor,
        "tissue_fraction": round(frac, 4), "tissue_area_mm2": None if area is None else round(area, 4),
        "tissue_pixels": mask.n_tissue,
    }


def journal_path(out: Path | str) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".scan.jsonl")


def read_journal(path: Path) -> dict[str, dict]:
    """Rows of an interrupted scan by slide id (a last line cut off by the kill is ignored)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["slide_id"]] = row
    return done


class _ScanTask:
    """The picklable per-slide job given to the pool."""

    def __init__(self, hsv, thumbnail_size, assume_mpp, options, base):
        self.args = (hsv, thumbnail_size, assume_mpp, options, base)

    def __call__(self, item):
        i, entry = item
        return i, scan_one(entry, *self.args)


def scan_slides(source: str | Path, out: str | Path | None = None, assume_mpp: float | None = None,
                tissue_cfg=None, skip_bad: bool = False, progress: bool = True, workers: int = 1,
                options: ReaderOptions | None = None) -> ScanReport:
    """Scan a folder of slides, a manifest or a ``.txt`` list of paths/URLs with ``workers`` processes;
    write ``out`` (CSV/Parquet) if given, resuming from its journal. Raises SlideError listing every
    unreadable slide unless ``skip_bad``."""
    import multiprocessing as mp

    from pathfm.progress import progress_bar

    from pathfm.config import TissueFilterConfig

    tissue_cfg = tissue_cfg or TissueFilterConfig()
    task = _ScanTask(HSVFilter.from_config(tissue_cfg), tissue_cfg.thumbnail_size, assume_mpp,
                     options or ReaderOptions(), Path(out).resolve().parent if out else Path.cwd())
    entries = load_manifest(source)  # lists all missing local files before opening any
    journal = journal_path(out) if out else None
    done = read_journal(journal) if journal else {}
    results: dict[int, tuple[str, dict | str]] = {}
    todo = []
    for i, e in enumerate(entries):
        if e.slide_id in done:
            results[i] = ("ok", done[e.slide_id])
        else:
            todo.append((i, e))
    report = ScanReport(resumed=len(results))
    t0 = time.perf_counter()
    bar = progress_bar(total=len(entries), initial=len(results), desc="scan", unit="slide", disable=not progress)
    log = open(journal, "a") if journal else None  # noqa: SIM115 - closed in the finally below
    if log is not None and journal.stat().st_size and not journal.read_bytes().endswith(b"\n"):
        log.write("\n")  # a line cut off by a kill stays alone (and is ignored) instead of spoiling the next
    pool = None
    finished = False
    try:
        if workers > 1 and len(todo) > 1:
            pool = mp.get_context("fork").Pool(workers)
            stream = pool.imap_unordered(task, todo, chunksize=max(1, min(8, len(todo) // (4 * workers))))
        else:
            pool, stream = None, map(task, todo)
        for i, res in stream:
            results[i] = res
            if log is not None and res[0] == "ok":
                log.write(json.dumps(res[1]) + "\n")
                log.flush()
            bar.update(1)
        finished = True
    finally:
        if pool is not None:
            # all results in: let the workers take their stop sentinel and exit (Pool.terminate() here raced with
            # the pool's own worker replacement and once left a worker waiting on the task queue forever);
            # interrupted: stop them at once
            pool.close() if finished else pool.terminate()
            pool.join()
        bar.close()
        if log is not None:
            log.close()
    report.seconds = time.perf_counter() - t0
    for i in sorted(results):
        status, value = results[i]
        if status == "bad":
            report.bad.append(value)
            continue
        row = dict(value)
        if row["mpp"] is None:
            report.no_mpp.append(row["slide_id"])
        if row.pop("tissue_pixels", 1) == 0:
            report.no_tissue.append(row["slide_id"])
        report.rows.append(row)
    if report.bad and not skip_bad:
        raise SlideError(f"{len(report.bad)} of {len(entries)} slide(s) cannot be read "
                         "(nothing written; fix or remove them, or pass --skip-bad):\n  " + "\n  ".join(report.bad))
    if out is not None and report.rows:
        write_manifest(report.rows, out)
    if journal is not None and journal.exists():
        journal.unlink()
    return report
