"""The slide manifest: one row per slide (CSV or Parquet).

Columns: ``path`` (required; relative paths are relative to the manifest's folder; ``file://`` URLs are
local files; other URLs such as ``s3://bucket/a.svs`` are read through fsspec, see
:mod:`pathfm.data.readers`), ``slide_id``
(default: file stem), and optional ``patient_id``, ``mpp`` (level-0 microns per pixel; overrides the
slide metadata), ``cohort``. ``pathfm data scan`` writes the same columns plus what it measured
(dimensions, levels, mpp source, tissue area). A ``.txt`` file lists one slide path or URL per line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.data.readers import is_dicom_folder, is_remote, local_path, uri_scheme
from pathfm.errors import PathfmError, SlideError

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
URI_LIST_SUFFIXES = (".txt",)
OPTIONAL_COLUMNS = ("slide_id", "patient_id", "mpp", "cohort")


@dataclass(frozen=True)
class SlideEntry:
    path: Path | str  # a local Path, or a remote URL kept as written (never checked on the local disk)
    slide_id: str
    patient_id: str | None = None
    mpp: float | None = None
    cohort: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _clean(v) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _mpp(v, where: str) -> float | None:
    s = _clean(v)
    if s is None or s.lower() in ("nan", "none", "null"):
        return None
    try:
        x = float(s)
    except ValueError:
        raise PathfmError(f"{where}: mpp must be a number, got {s!r}") from None
    if not math.isfinite(x):
        return None
    if x <= 0:
        raise PathfmError(f"{where}: mpp must be > 0, got {x}")
    return x


def read_manifest_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = [dict(r) for r in csv.DictReader(row for row in f if not row.lstrip().startswith("#"))]
    else:
        from pathfm.io import read_parquet

        rows = read_parquet(path, "manifest", "save it as Parquet (e.g. `pathfm data scan` with --out "
                            "slides.parquet) or as .csv with a path column").to_dicts()
    return rows


def slide_stem(path: Path | str) -> str:
    """Default slide id: the file name without its suffix (also for URLs and DICOM folders)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem if Path(name).suffix.lower() in SLIDE_SUFFIXES else name


def read_uri_list(path: Path) -> list[dict]:
    """Rows of a ``.txt`` list: one slide path or URL per line (blank lines and ``#`` comments skipped)."""
    lines = (ln.strip() for ln in path.read_text().splitlines())
    return [{"path": ln} for ln in lines if ln and not ln.startswith("#")]


def folder_slides(folder: Path) -> list[Path]:
    """Slide files below ``folder`` and DICOM WSI folders (folders holding .dcm files), sorted."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in SLIDE_SUFFIXES and p.is_file()]
    dicom = [p for p in [folder, *folder.rglob("*")] if is_dicom_folder(p)]
    return sorted(files + dicom)


def load_manifest(source: str | Path) -> list[SlideEntry]:
    """Slides of a manifest file, a ``.txt`` list of paths/URLs, a folder (every slide file and DICOM folder
    below it, sorted) or a single slide file. Raises PathfmError listing *all* missing local files at once,
    before anything is opened (remote URLs are checked when opened)."""
    from pathfm.config import resolve_path

    src = resolve_path(source)
    if not src.exists():
        raise PathfmError(f"data.slides: {source} does not exist (give a folder of slides, a manifest "
                          ".csv/.parquet or a .txt list of slide paths/URLs)")
    if src.is_dir():
        files = folder_slides(src)
        if not files:
            raise PathfmError(f"{src}: no slide files ({', '.join(SLIDE_SUFFIXES)}) nor DICOM folders in this folder")
        return [SlideEntry(path=p, slide_id=slide_stem(p)) for p in files]
    if src.suffix.lower() in SLIDE_SUFFIXES:  # a single slide
        return [SlideEntry(path=src, slide_id=src.stem)]
    if src.suffix.lower() in URI_LIST_SUFFIXES:
        rows = read_uri_list(src)
    elif src.suffix.lower() in MANIFEST_SUFFIXES:
        rows = read_manifest_rows(src)
    else:
        raise PathfmError(f"{src}: not a manifest (.csv or .parquet), a .txt list of slides nor a folder of slides")
    if not rows:
        raise PathfmError(f"{src}: the manifest has no rows")
    if "path" not in rows[0]:
        raise PathfmError(f"{src}: the manifest needs a 'path' column (found: {', '.join(rows[0])})")
    entries, missing, seen = [], [], {}
    for i, row in enumerate(rows, start=2):
        where = f"{src} row {i}"
        p = _clean(row.get("path"))
        if p is None:
            raise PathfmError(f"{where}: empty path")
        if is_remote(p):
            path = p
        else:
            path = (local_path(p) if uri_scheme(p) else Path(p)).expanduser()
            if not path.is_absolute():
                path = (src.parent / path).resolve()
            if not path.exists():
                missing.append(str(path))
        sid = _clean(row.get("slide_id")) or slide_stem(path)
        if sid in seen:
            raise PathfmError(f"{where}: duplicate slide_id {sid!r} (also row {seen[sid]})")
        seen[sid] = i
        known = {"path", *OPTIONAL_COLUMNS}
        entries.append(SlideEntry(
            path=path, slide_id=sid, patient_id=_clean(row.get("patient_id")),
            mpp=_mpp(row.get("mpp"), where), cohort=_clean(row.get("cohort")),
            extra={k: v for k, v in row.items() if k not in known},
        ))
    if missing:
        raise SlideError(
            f"{src}: {len(missing)} slide file(s) listed in the manifest do not exist:\n  " + "\n  ".join(missing)
            + "\nfix the paths (relative paths are relative to the manifest's folder) or remove those rows"
        )
    return entries


def write_manifest(rows: list[dict], out: str | Path) -> Path:
    """Write rows (dicts with the same keys) atomically as CSV or Parquet by the suffix of ``out``."""
    from pathfm.io import atomic_path

    out = Path(out)
    if out.suffix.lower() not in MANIFEST_SUFFIXES:
        raise PathfmError(f"{out}: the manifest must end in .csv or .parquet")
    cols = list(rows[0]) if rows else ["path", *OPTIONAL_COLUMNS]
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                for r in rows:
                    w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        else:
            import polars as pl

            pl.DataFrame(rows).write_parquet(tmp)
    return out
