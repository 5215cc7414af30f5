"""Slide readers: one small interface over openslide, tiffslide (fsspec URLs) and wsidicom (DICOM WSI).

Every backend gives the same view of a slide: level-0 ``dimensions``, ``level_dimensions``,
``level_downsamples``, the metadata resolution ``mpp`` (or None), a ``vendor`` string, and
``read_region(location, level, size)`` returning an **RGB** PIL image where pixels outside the slide are
white (openslide's transparent border composited on white). ``location`` is in level-0 pixels, as in
openslide; the exact-grid backends (tiffslide, wsidicom) map it to ``round(x / downsample)`` on the level,
which is the pixel openslide centres its sub-pixel read on.

Choice (``data.reader``): ``auto`` picks openslide for local files, wsidicom for a local folder of
``.dcm`` files, tiffslide for every other URL scheme (``s3://``, ``gs://``, ``az://``, ``https://``,
``memory://``). Remote files are read through fsspec's LRU block cache (:class:`BlockCachedFile`), one
per open handle, so a worker's repeated tile reads of a slide do not refetch the same bytes.

A local file that does not open (or read) gets an error saying why (:mod:`pathfm.data.unreadable`): empty or
truncated (copy it again), or a format another installed backend reads (that backend named).
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathfm.errors import ConfigError, SlideError

READERS = ("auto", "openslide", "tiffslide", "wsidicom")
# openslide vendors whose levels are exactly one tiled TIFF page each, read without colour transforms, so the
# thumbnail may be decoded from the page's tiles directly (OpenSlideReader.read_level_reduced)
REDUCED_DECODE_VENDORS = ("aperio", "generic-tiff")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
OPENSLIDE_FORMATS = (
    "Aperio .svs, tiled pyramidal TIFF, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana, DICOM"
)


def uri_scheme(uri: str | Path) -> str | None:
    """The URL scheme of ``uri`` (``"s3"``, ``"file"``, ...) or None for a plain path."""
    m = _SCHEME.match(str(uri))
    return m.group(1).lower() if m else None


def is_remote(uri: str | Path) -> bool:
    """True for URLs other than ``file://`` (read through fsspec, never checked on the local disk)."""
    scheme = uri_scheme(uri)
    return scheme is not None and scheme != "file"


def local_path(uri: str | Path) -> Path:
    """A plain path or a ``file://`` URL as a local Path."""
    s = str(uri)
    if uri_scheme(s) == "file":
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(s).path))
    return Path(s)


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir())


def choose_reader(uri: str | Path, reader: str = "auto") -> str:
    """The backend for ``uri`` under ``data.reader`` (see the module docstring for the ``auto`` rule)."""
    if reader not in READERS:
        raise ConfigError(f"data.reader must be one of {', '.join(READERS)}, got {reader!r}")
    if reader != "auto":
        return reader
    if is_remote(uri):
        return "tiffslide"
    return "wsidicom" if is_dicom_folder(local_path(uri)) else "openslide"


@dataclass(frozen=True)
class ReaderOptions:
    """How slides are opened: the backend choice and the per-handle block cache of remote reads."""

    reader: str = "auto"
    block_size: int = 1 << 20  # bytes fetched per remote request
    cache_blocks: int = 32  # blocks kept per open remote slide (LRU)

    @classmethod
    def from_config(cls, data_cfg) -> "ReaderOptions":
        return cls(data_cfg.reader, int(data_cfg.remote_block_kb) * 1024, int(data_cfg.remote_cache_blocks))


def thumbnail_size(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) ``PIL.Image.thumbnail(size)`` shrinks an ``image_size`` image to: the aspect ratio
    kept (the rounding that keeps it closest), never enlarged."""
    import math

    w, h = image_size
    x, y = min(size[0], w), min(size[1], h)
    if (x, y) == (w, h):
        return w, h
    aspect = w / h

    def closest(n: float, key) -> int:
        return max(min(math.floor(n), math.ceil(n), key=key), 1)

    if x / y >= aspect:
        x = closest(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = closest(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


class SlideReader(ABC):
    """An open slide (see the module docstring for the contract)."""

    backend: str = ""

    def __init__(self, uri: str):
        self.uri = uri
        self.dimensions: tuple[int, int] = (0, 0)
        self.level_dimensions: tuple[tuple[int, int], ...] = ()
        self.level_downsamples: tuple[float, ...] = ()
        self.mpp: float | None = None
        self.vendor: str = ""

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        """RGB PIL image of ``size`` at level-0 ``location`` on ``level``; outside the slide is white."""

    def get_thumbnail(self, size: tuple[int, int]):
        """RGB thumbnail fitting in ``size`` (the size PIL's ``Image.thumbnail`` gives): the smallest level at
        least that large, decoded at a reduced resolution still at least the thumbnail's size where
        :meth:`read_level_reduced` can (else read with :meth:`read_region`), and shrunk with OpenCV's area
        filter (INTER_AREA; several times cheaper than openslide's Lanczos, see docs/benchmarks.md "Slide scan")."""
        import cv2
        from PIL import Image

        level = self.thumbnail_level(size)
        target = thumbnail_size(self.level_dimensions[level], size)
        pixels = self.read_level_reduced(level, target)
        if pixels is None:
            pixels = np.asarray(self.read_region((0, 0), level, self.level_dimensions[level]))
        if (pixels.shape[1], pixels.shape[0]) == target:
            return Image.fromarray(pixels)
        return Image.fromarray(cv2.resize(pixels, target, interpolation=cv2.INTER_AREA))

    def thumbnail_level(self, size: tuple[int, int]) -> int:
        """The smallest level at least as large as a thumbnail fitting in ``size`` (level 0 if none is)."""
        downsample = max(d / s for d, s in zip(self.dimensions, size))
        return max((i for i, d in enumerate(self.level_downsamples) if d <= downsample), default=0)

    def read_level_reduced(self, level: int, min_size: tuple[int, int]) -> np.ndarray | None:
        """The whole ``level`` as RGB pixels at a resolution reduced as far as ``min_size`` allows, or None
        where the backend has no such decoder (then :meth:`get_thumbnail` reads the level in full)."""
        return None

    def close(self) -> None:  # noqa: B027 - backends without resources keep the default
        pass


class GridSlideReader(SlideReader):
    """A backend that reads exact boxes of level pixels (no sub-pixel resampling)."""

    @abstractmethod
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 pixels of a box that lies inside ``level``."""

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        from PIL import Image

        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        x, y = int(round(location[0] / ds)), int(round(location[1] / ds))
        w, h = int(size[0]), int(size[1])
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        try:
            if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
                return Image.fromarray(self.read_level(level, x, y, w, h))
            canvas = np.full((h, w, 3), 255, np.uint8)
            if x1 > x0 and y1 > y0:
                canvas[y0 - y:y1 - y, x0 - x:x1 - x] = self.read_level(level, x0, y0, x1 - x0, y1 - y0)
            return Image.fromarray(canvas)
        except SlideError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the backend's read makes the slide unusable
            raise _read_failure(self, level, location, e) from e

    def _set_pyramid(self, level_dimensions) -> None:
        dims = tuple((int(w), int(h)) for w, h in level_dimensions)
        self.dimensions = dims[0]
        self.level_dimensions = dims
        # downsample as openslide defines it for a tiled pyramid: mean of the two axis ratios
        self.level_downsamples = tuple((dims[0][0] / w + dims[0][1] / h) / 2 for w, h in dims)


def _positive(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def _mean_mpp(values) -> float | None:
    vals = [v for v in map(_positive, values) if v is not None]
    return float(np.mean(vals)) if vals else None


class OpenSlideReader(SlideReader):
    backend = "openslide"

    def __init__(self, uri: str, *, explain: bool = True):
        """``explain``: a file that does not open gets an error saying why (pathfm.data.unreadable)."""
        import openslide

        super().__init__(uri)
        path = local_path(uri)
        if not path.exists():
            raise SlideError(f"slide not found: {path}")
        if path.is_dir():
            raise SlideError(f"slide path is a folder, not a slide file: {path} (a DICOM WSI folder? "
                             "use data.reader=wsidicom, or auto with the .dcm files inside)")
        try:
            self._slide = openslide.OpenSlide(str(path))
            # Touch the pyramid: a truncated file often opens but fails on first read.
            self._slide.read_region((0, 0), self._slide.level_count - 1, (1, 1))
        except openslide.OpenSlideUnsupportedFormatError:
            msg = (f"{path}: openslide cannot read this file format (supported: {OPENSLIDE_FORMATS}); convert it to a "
                   "tiled pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid) or remove it from the manifest")
            raise _unreadable(path, self.backend, msg, explain) from None
        except (openslide.OpenSlideError, OSError) as e:
            msg = f"{path}: openslide could not read the slide (corrupt?): {e}"
            raise _unreadable(path, self.backend, msg, explain) from None
        s = self._slide
        self.dimensions = tuple(map(int, s.dimensions))
        self.level_dimensions = tuple(tuple(map(int, d)) for d in s.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in s.level_downsamples)
        props = s.properties
        self.mpp = _mean_mpp([props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y)])
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "")

    def read_region(self, location, level, size):
        """openslide's own sub-pixel read; its transparent outside is composited on white."""
        import openslide
        from PIL import Image

        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level, tuple(map(int, size)))
        except (openslide.OpenSlideError, OSError) as e:
            raise _read_failure(self, level, location, e) from e
        # alpha test in PIL (np.asarray of a 1024 px region alone costs several times more; the minimum
        # is half the cost of a histogram: 10 vs 20 ms on a 6.6 Mpx level)
        if region.getchannel("A").getextrema()[0] < 255:
            region = Image.alpha_composite(Image.new("RGBA", region.size, (255, 255, 255, 255)), region)
        return region.convert("RGB")

    def read_level_reduced(self, level, min_size):
        """Aperio and generic tiled TIFF levels in JPEG or Aperio's RGB JPEG 2000, decoded from their tiles at
        1/2, 1/4 or 1/8 (:mod:`pathfm.data.reduced_decode`); None for every other slide."""
        from pathfm.data.reduced_decode import decode_level_reduced

        if self.vendor not in REDUCED_DECODE_VENDORS:
            return None
        return decode_level_reduced(local_path(self.uri), self.level_dimensions[level], min_size)

    def close(self) -> None:
        self._slide.close()


class BlockCachedFile(io.RawIOBase):
    """A read-only file over ``fs.cat_file`` ranges with fsspec's LRU block cache
    (:class:`fsspec.caching.BlockCache`): each miss fetches one ``block_size`` block, at most
    ``cache_blocks`` are kept. Works for every fsspec filesystem (s3, gcs, azure, http, memory), and a
    remote object that disappears shows up as an error on the next block miss."""

    def __init__(self, fs, path: str, block_size: int, cache_blocks: int):
        from fsspec.caching import BlockCache

        super().__init__()
        self.fs, self.path = fs, path
        self.size = int(fs.size(path))
        self.fetches = 0
        self._cache = BlockCache(block_size, self._fetch, self.size, maxblocks=cache_blocks)
        self._pos = 0

    def _fetch(self, start: int, end: int) -> bytes:
        self.fetches += 1
        return self.fs.cat_file(self.path, start=start, end=end)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if self._pos >= end:
            return b""
        data = self._cache._fetch(self._pos, end)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def level0_for(v: int, downsample: float) -> int:
    """The smallest level-0 coordinate ``u`` with ``int(u / downsample) == v`` (tiffslide's mapping of a
    level-0 location onto a level): ceil, corrected for float rounding."""
    u = int(np.ceil(v * downsample))
    while int(u / downsample) < v:
        u += 1
    while u > 0 and int((u - 1) / downsample) == v:
        u -= 1
    return u


class TiffSlideReader(GridSlideReader):
    """tiffslide on a local path or any fsspec URL (remote ones through :class:`BlockCachedFile`)."""

    backend = "tiffslide"

    def __init__(self, uri: str, options: ReaderOptions, *, explain: bool = True):
        """``explain``: a local file that does not open gets an error saying why (pathfm.data.unreadable)."""
        try:
            import tiffslide
        except ImportError:
            raise SlideError(f"{uri}: reading this slide needs tiffslide: pip install 'pathfm[remote]'") from None
        super().__init__(uri)
        self.file = None
        try:
            if is_remote(uri):
                import fsspec

                fs, path = fsspec.core.url_to_fs(uri)
                if not fs.exists(path):
                    raise FileNotFoundError(path)
                self.file = BlockCachedFile(fs, path, options.block_size, options.cache_blocks)
                self._slide = tiffslide.TiffSlide(self.file)
            else:
                path = local_path(uri)
                if not path.is_file():
                    raise SlideError(f"slide not found: {path}")
                if explain:  # tiffslide opens a file cut short in its pyramid as a slide with fewer levels
                    from pathfm.data.unreadable import RECOPY, truncation

                    if damage := truncation(path, data=False):
                        raise SlideError(f"{path}: {damage}: {RECOPY}")
                self._slide = tiffslide.TiffSlide(str(path))
            s = self._slide
            self._set_pyramid(s.level_dimensions)  # parses the file's pages: a damaged file fails here...
            s.read_region((0, 0), self.level_count - 1, (1, 1))  # ... or on its first read
        except SlideError:
            raise
        except FileNotFoundError:
            raise SlideError(f"slide not found: {uri}") from None
        except Exception as e:  # noqa: BLE001 - tifffile raises many types for files it cannot parse
            msg = (f"{uri}: tiffslide could not open the slide (not a tiled TIFF/SVS, truncated, or unreachable?): "
                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
            if is_remote(uri):
                raise SlideError(msg) from None
            raise _unreadable(local_path(uri), self.backend, msg, explain) from None
        props = s.properties
        self.mpp = _mean_mpp([props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")])
        self.vendor = props.get("tiffslide.vendor") or ""

    def read_level(self, level, x, y, w, h):
        ds = self.level_downsamples[level]
        # tiffslide maps level-0 locations with int(v / ds); give it one that lands exactly on (x, y)
        loc = tuple(level0_for(v, ds) for v in (x, y))
        arr = self._slide.read_region(loc, level, (w, h), as_array=True, padding=False)
        return np.ascontiguousarray(arr[..., :3].astype(np.uint8, copy=False))

    def read_level_reduced(self, level, min_size):
        """As :meth:`OpenSlideReader.read_level_reduced`, through tiffslide's open TIFF (local or remote), for
        Aperio slides and TIFFs tiffslide finds no vendor in (``""``), so both backends give one thumbnail."""
        from pathfm.data.reduced_decode import decode_level_reduced

        if self.vendor not in ("aperio", ""):
            return None
        return decode_level_reduced(self._slide.ts_tifffile, self.level_dimensions[level], min_size)

    def close(self) -> None:
        self._slide.close()
        if self.file is not None:
            self.file.close()


class WsiDicomReader(GridSlideReader):
    """wsidicom on a local folder of DICOM WSI instances (one slide)."""

    backend = "wsidicom"

    def __init__(self, uri: str):
        try:
            from wsidicom import WsiDicom
        except ImportError:
            raise SlideError(f"{uri}: reading DICOM slides needs wsidicom: pip install 'pathfm[dicom]'") from None
        super().__init__(uri)
        path = local_path(uri)
        if not path.exists():
            raise SlideError(f"slide not found: {path}")
        try:
            self._slide = WsiDicom.open(path)
        except Exception as e:  # noqa: BLE001 - pydicom/wsidicom raise many types for unusable folders
            raise SlideError(f"{path}: wsidicom could not open a DICOM WSI here (a folder of the .dcm "
                             f"instances of one slide is expected): {e}") from None
        levels = list(self._slide.levels)
        self._set_pyramid([(lv.size.width, lv.size.height) for lv in levels])
        self._level_index = [lv.level for lv in levels]  # wsidicom addresses levels by log2 scale
        mpp = self._slide.mpp
        self.mpp = _mean_mpp([mpp.width, mpp.height]) if mpp is not None else None
        self.vendor = "dicom"

    def read_level(self, level, x, y, w, h):
        img = self._slide.read_region((x, y), self._level_index[level], (w, h))
        return np.asarray(img.convert("RGB"))

    def close(self) -> None:
        self._slide.close()


def _read_failure(reader: SlideReader, level: int, location, e: Exception) -> SlideError:
    """A failed read of a slide that opened: a local file cut short says so (pathfm.data.unreadable)."""
    if not is_remote(reader.uri) and local_path(reader.uri).is_file():
        from pathfm.data.unreadable import RECOPY, truncation

        damage = truncation(local_path(reader.uri))
        if damage:
            return SlideError(f"{reader.uri}: {damage}: {RECOPY}")
    return SlideError(f"{reader.uri}: {reader.backend} could not read level {level} at {location}: {e}")


def _unreadable(path: Path, backend: str, msg: str, explain: bool) -> SlideError:
    """The error for a local file ``backend`` could not open: why (truncated, or another reader reads it) when
    ``explain`` (pathfm.data.unreadable), else ``msg``."""
    if not explain:
        return SlideError(msg)
    from pathfm.data.unreadable import unreadable_slide

    def opens(name: str) -> bool:  # another backend opens the file and reads a pixel of its smallest level
        reader = OpenSlideReader(str(path), explain=False) if name == "openslide" else \
            TiffSlideReader(str(path), ReaderOptions(reader=name), explain=False)
        try:
            reader.read_region((0, 0), reader.level_count - 1, (1, 1))
        finally:
            reader.close()
        return True

    return unreadable_slide(path, backend, msg, opens)


def open_reader(uri: str | Path, options: ReaderOptions | None = None) -> SlideReader:
    """Open ``uri`` with the backend :func:`choose_reader` picks; :class:`SlideError` names the slide."""
    options = options or ReaderOptions()
    uri = str(uri)
    backend = choose_reader(uri, options.reader)
    if backend == "openslide":
        if is_remote(uri):
            raise SlideError(f"{uri}: openslide reads local files only; use data.reader=tiffslide (or auto) for URLs")
        return OpenSlideReader(uri)
    if backend == "tiffslide":
        return TiffSlideReader(uri, options)
    if is_remote(uri):
        raise SlideError(f"{uri}: the wsidicom backend reads local DICOM folders only")
    return WsiDicomReader(uri)
