"""What inspecting a slide measured (metadata mpp, pyramid geometry, thumbnail tissue mask), kept on disk.

Validating a cohort before training opens every slide and reads a thumbnail (0.04-0.19 CPU-s per bundled
slide, more for remote ones); a second training run or every sweep trial would pay it again. The cache
stores one small ``.npz`` per slide under ``data.mask_cache`` (``auto``: a ``.pathfm-cache`` folder next to
the manifest, or inside the slide folder), keyed by the slide's identity (path, size, modification time;
for URLs the object's size and ETag/modification time from ``fs.info``), the thumbnail size and the HSV
box. A changed slide or tissue setting misses the cache; an unwritable folder just disables it; a damaged
entry is measured again (with a warning) and replaced atomically.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from pathfm.data.readers import is_remote
from pathfm.data.slides import SlideGeometry
from pathfm.data.tissue import TissueMask

log = logging.getLogger("pathfm.data")

CACHE_DIRNAME = ".pathfm-cache"
_VERSION = "2"  # 2: thumbnails decoded from the tiles at reduced resolution (data/reduced_decode.py)


def slide_identity(path: Path | str) -> str:
    """Path plus what changes when the slide's bytes change (size and mtime; ETag for objects)."""
    if is_remote(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(str(path))
        info = fs.info(p)
        stamp = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "LastModified", "mtime", "last_modified")
                      if info.get(k) is not None), "")
        return f"{path}|{info.get('size')}|{stamp}"
    p = Path(path)
    files = sorted(p.iterdir()) if p.is_dir() else [p]  # a DICOM folder: every instance
    return "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def default_cache_dir(slides: Path) -> Path:
    """``.pathfm-cache`` inside a slide folder, else next to the manifest / list / slide file."""
    slides = Path(slides)
    return (slides if slides.is_dir() else slides.parent) / CACHE_DIRNAME


class InspectionCache:
    """``get``/``put`` of (metadata mpp, geometry, mask) by slide; inactive when ``folder`` is None."""

    def __init__(self, folder: Path | str | None):
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0

    def key(self, path: Path | str, thumbnail_size: int, hsv) -> str:
        text = "\n".join([_VERSION, slide_identity(path), str(int(thumbnail_size)), repr(hsv.box)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str) -> tuple[float | None, SlideGeometry, TissueMask] | None:
        if self.folder is None or not (self.folder / f"{key}.npz").is_file():
            return None
        try:
            with np.load(self.folder / f"{key}.npz") as z:
                mask = np.unpackbits(z["mask_bits"])[: int(np.prod(z["mask_shape"]))].reshape(z["mask_shape"]).astype(bool)
                geometry = SlideGeometry(int(z["size"][0]), int(z["size"][1]),
                                         tuple(tuple(map(int, d)) for d in z["level_dimensions"]),
                                         tuple(float(d) for d in z["level_downsamples"]))
                mpp = float(z["mpp"])
                scale = (float(z["scale"][0]), float(z["scale"][1]))
        except Exception as e:  # noqa: BLE001 - the cache only saves time: any entry it cannot read is measured again
            # (a cut-off file is a zipfile.BadZipFile, a damaged array a ValueError or EOFError, ...)
            log.warning("slide-inspection cache entry %s is unreadable (%s: %s); recomputed and written anew",
                        self.folder / f"{key}.npz", type(e).__name__, e)
            return None
        self.hits += 1
        return (None if np.isnan(mpp) else mpp), geometry, TissueMask(mask, scale)

    def put(self, key: str, mpp: float | None, geometry: SlideGeometry, mask: TissueMask) -> None:
        if self.folder is None:
            return
        from pathfm.io import atomic_path

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.folder / f"{key}.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, mask_bits=np.packbits(mask.mask), mask_shape=np.asarray(mask.mask.shape),
                         scale=np.asarray(mask.scale, dtype=np.float64),
                         size=np.asarray([geometry.width, geometry.height]),
                         level_dimensions=np.asarray(geometry.level_dimensions),
                         level_downsamples=np.asarray(geometry.level_downsamples),
                         mpp=np.float64(np.nan if mpp is None else mpp))
        except OSError as e:  # a read-only data folder: work without the cache
            log.warning("slide-inspection cache disabled (%s: %s); set data.mask_cache to a writable folder", self.folder, e)
            self.folder = None
