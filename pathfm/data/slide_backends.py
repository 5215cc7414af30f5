"""The slide backends: openslide (local files), tiffslide (local files and fsspec URLs) and wsidicom (a local
folder of DICOM WSI instances), each a :class:`~pathfm.data.slide_reader.SlideReader`. A local file that
openslide or tiffslide cannot open gets an error saying why (:mod:`pathfm.data.unreadable`), naming the other
backend where that one reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathfm.data.block_cache import BlockCachedFile
from pathfm.data.reader_choice import ReaderOptions, is_remote, local_path
from pathfm.data.slide_reader import GridSlideReader, SlideReader, mean_mpp, read_failure
from pathfm.errors import SlideError

# openslide vendors whose levels are exactly one tiled TIFF page each, read without colour transforms, so the
# thumbnail may be decoded from the page's tiles directly (OpenSlideReader.read_level_reduced)
REDUCED_DECODE_VENDORS = ("aperio", "generic-tiff")
OPENSLIDE_FORMATS = (
    "Aperio .svs, tiled pyramidal TIFF, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana, DICOM"
)


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
        self.mpp = mean_mpp([props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y)])
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "")

    def read_region(self, location, level, size):
        """openslide's own sub-pixel read; its transparent outside is composited on white."""
        import openslide
        from PIL import Image

        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level, tuple(map(int, size)))
        except (openslide.OpenSlideError, OSError) as e:
            raise read_failure(self, level, location, e) from e
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
        self.mpp = mean_mpp([props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")])
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
        self.mpp = mean_mpp([mpp.width, mpp.height]) if mpp is not None else None
        self.vendor = "dicom"

    def read_level(self, level, x, y, w, h):
        img = self._slide.read_region((x, y), self._level_index[level], (w, h))
        return np.asarray(img.convert("RGB"))

    def close(self) -> None:
        self._slide.close()


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
