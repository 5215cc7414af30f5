"""Opening whole-slide images (any :mod:`pathfm.data.readers` backend): clear errors, explicit resolution, bounded handle cache.

Resolution (microns per pixel at level 0) comes from, in this order: a manifest override, the slide's
own metadata (e.g. ``openslide.mpp-x``/``mpp-y``), an explicit ``assume_mpp``. Nothing is ever guessed:
a slide with none of the three raises :class:`~pathfm.errors.SlideError` naming the slide and the fix.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathfm.data.readers import ReaderOptions, SlideReader, open_reader
from pathfm.errors import SlideError

MPP_FIX = (
    "give its resolution explicitly: an 'mpp' column in the slide manifest (pathfm data scan writes one), "
    "or data.assume_mpp=0.5 for every slide without metadata"
)


def open_slide(path: str | Path, options: ReaderOptions | None = None) -> SlideReader:
    """Open a slide file, ``file://``/fsspec URL or DICOM folder with the backend ``options.reader``
    chooses (:mod:`pathfm.data.readers`); a :class:`SlideError` names the slide instead of the backend's
    exceptions (missing file, unsupported format, truncated or corrupt file)."""
    return open_reader(path, options)


def metadata_mpp(slide: SlideReader) -> float | None:
    """Level-0 microns per pixel from the slide metadata (mean of x and y), or None."""
    return slide.mpp


def resolve_mpp(path: str | Path, metadata: float | None, override: float | None, assume: float | None) -> tuple[float, str]:
    """(mpp, source) with source in {"manifest", "metadata", "assume_mpp"}; SlideError if none."""
    if override is not None and np.isfinite(override):
        if override <= 0:
            raise SlideError(f"{path}: manifest mpp must be > 0, got {override}")
        return float(override), "manifest"
    if metadata is not None:
        return float(metadata), "metadata"
    if assume is not None:
        return float(assume), "assume_mpp"
    raise SlideError(f"{path}: the slide has no resolution (mpp) metadata; {MPP_FIX}")


@dataclass(frozen=True)
class SlideGeometry:
    """What sampling needs to know about a slide's pyramid."""

    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    @classmethod
    def of(cls, slide) -> "SlideGeometry":
        w, h = slide.dimensions
        return cls(int(w), int(h), tuple(tuple(map(int, d)) for d in slide.level_dimensions),
                   tuple(float(d) for d in slide.level_downsamples))

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (level 0 if none), with a
        little tolerance for the rounding of level downsamples (e.g. 3.9999)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best


class SlideCache:
    """At most ``max_open`` open slide handles (least recently used closed first).

    Handles are per process: after a fork (DataLoader workers) the cache notices the new pid and
    starts empty, so no handle is ever shared across processes."""

    def __init__(self, max_open: int = 16, options: ReaderOptions | None = None):
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.max_open = max_open
        self.options = options or ReaderOptions()
        self._pid = os.getpid()
        self._handles: OrderedDict[str, object] = OrderedDict()
        self.opens = 0

    def get(self, path: str | Path):
        if os.getpid() != self._pid:  # forked: drop the parent's handles without touching them
            self._handles = OrderedDict()
            self._pid = os.getpid()
        key = str(path)
        slide = self._handles.get(key)
        if slide is not None:
            self._handles.move_to_end(key)
            return slide
        slide = open_slide(key, self.options)
        self.opens += 1
        self._handles[key] = slide
        while len(self._handles) > self.max_open:
            _, old = self._handles.popitem(last=False)
            old.close()
        return slide

    def discard(self, path: str | Path) -> None:
        slide = self._handles.pop(str(path), None)
        if slide is not None:
            try:
                slide.close()
            except Exception:  # noqa: BLE001 - a broken handle is being thrown away anyway
                pass

    def __len__(self) -> int:
        return len(self._handles)

    def __getstate__(self):  # pickling (spawned workers) carries no handles
        return {"max_open": self.max_open, "options": self.options, "_pid": -1, "_handles": OrderedDict(), "opens": 0}


#: a level-pixel side within this relative distance of an integer multiple of the tile size is read
#: at exactly that multiple (at most 1 % off the nominal resolution, below the accuracy of scanner mpp
#: metadata), so the tile is an exact box reduction instead of a fractional resample: a 2 um/px tile
#: from a 0.499 um/px level reads 1024 px and box-averages 4x4 instead of resampling 1026 px
SNAP_TOLERANCE = 0.01


def level_read_size(extent_level: float, size: int) -> int:
    """Side in level pixels to read for a ``size`` px tile covering ``extent_level`` level pixels."""
    k = round(extent_level / size)
    if k >= 1 and abs(extent_level - k * size) <= SNAP_TOLERANCE * extent_level:
        return int(k * size)
    return max(1, int(round(extent_level)))


def read_tile(slide, geometry: SlideGeometry, x0: int, y0: int, extent0: float, size: int) -> np.ndarray:
    """Read the square region of level-0 side ``extent0`` at (x0, y0) as a ``size`` px RGB uint8 tile,
    from the coarsest pyramid level that still has at least ``size`` px across it; resized only when that
    level's pixel count differs (after snapping to an integer multiple, see :data:`SNAP_TOLERANCE`;
    integer factors are box-averaged). Pixels outside the slide come back white (every reader's contract)."""
    from PIL import Image

    downsample = extent0 / size
    level = geometry.best_level(downsample)
    n = level_read_size(extent0 / geometry.level_downsamples[level], size)
    rgb = slide.read_region((int(x0), int(y0)), level, (n, n))
    if n != size:
        if n % size == 0:  # integer factor (a 1-level slide read for a coarser resolution): box average
            rgb = rgb.reduce(n // size)
        else:
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb)
