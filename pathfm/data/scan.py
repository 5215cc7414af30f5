"""``pathfm data scan``: open every slide, measure it, write the manifest.

All slide files are checked to exist before any is opened; every file openslide cannot read is reported
together (nothing is written unless ``skip_bad``). Slides without resolution metadata are listed with the
fix and written with an empty ``mpp`` (fill it in, or train with ``data.assume_mpp``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.data.hsv import HSVFilter
from pathfm.data.manifest import load_manifest, write_manifest
from pathfm.data.slides import MPP_FIX, SlideGeometry, metadata_mpp, open_slide, resolve_mpp
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

    def summary(self) -> str:
        lines = [f"{len(self.rows)} slide(s) scanned"]
        if self.bad:
            lines.append(f"{len(self.bad)} unreadable slide(s) skipped:\n  " + "\n  ".join(self.bad))
        if self.no_mpp:
            lines.append(f"{len(self.no_mpp)} slide(s) without resolution metadata: {', '.join(self.no_mpp)}; "
                         f"they are written with an empty mpp. To use them, {MPP_FIX}")
        if self.no_tissue:
            lines.append(f"{len(self.no_tissue)} slide(s) with no tissue in the thumbnail mask: {', '.join(self.no_tissue)}")
        return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    """Relative to the manifest's folder when the slide lies below it, else absolute."""
    path = Path(path).resolve()
    return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)


def scan_slides(source: str | Path, out: str | Path | None = None, assume_mpp: float | None = None,
                tissue_cfg=None, skip_bad: bool = False, progress: bool = True) -> ScanReport:
    """Scan a folder of slides or a manifest; write ``out`` (CSV/Parquet) if given. Raises SlideError
    listing every unreadable slide unless ``skip_bad``."""
    from tqdm.auto import tqdm

    from pathfm.config import TissueFilterConfig

    tissue_cfg = tissue_cfg or TissueFilterConfig()
    hsv = HSVFilter.from_config(tissue_cfg)
    entries = load_manifest(source)  # lists all missing files before opening any
    base = Path(out).resolve().parent if out else Path.cwd()
    report = ScanReport()
    for e in tqdm(entries, desc="scan", disable=not progress):
        try:
            slide = open_slide(e.path)
        except SlideError as err:
            report.bad.append(str(err))
            continue
        try:
            meta = metadata_mpp(slide)
            geometry = SlideGeometry.of(slide)
            mask = TissueMask.from_slide(slide, hsv, tissue_cfg.thumbnail_size)
            vendor = slide.properties.get("openslide.vendor", "")
        except Exception as err:  # noqa: BLE001 - any read failure makes the slide unusable
            report.bad.append(f"{e.path}: openslide failed while reading the slide: {err}")
            continue
        finally:
            slide.close()
        try:
            mpp, src = resolve_mpp(e.path, meta, e.mpp, assume_mpp)
        except SlideError:  # no resolution anywhere: reported, not fatal, in a scan
            mpp, src = None, "missing"
            report.no_mpp.append(e.slide_id)
        frac = mask.fraction
        if mask.n_tissue == 0:
            report.no_tissue.append(e.slide_id)
        area = None if mpp is None else frac * geometry.width * geometry.height * (mpp / 1000.0) ** 2
        report.rows.append({
            "path": _rel(e.path, base), "slide_id": e.slide_id, "patient_id": e.patient_id,
            "mpp": None if mpp is None else round(float(mpp), 6), "cohort": e.cohort, "mpp_source": src,
            "width": geometry.width, "height": geometry.height, "levels": len(geometry.level_downsamples),
            "level_downsamples": ";".join(f"{d:.4g}" for d in geometry.level_downsamples), "vendor": vendor,
            "tissue_fraction": round(frac, 4), "tissue_area_mm2": None if area is None else round(area, 4),
        })
    if report.bad and not skip_bad:
        raise SlideError(f"{len(report.bad)} of {len(entries)} slide(s) cannot be read by openslide "
                         "(nothing written; fix or remove them, or pass --skip-bad):\n  " + "\n  ".join(report.bad))
    if out is not None and report.rows:
        write_manifest(report.rows, out)
    return report
