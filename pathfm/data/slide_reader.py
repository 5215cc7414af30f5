"""The interface every slide backend gives (:class:`SlideReader`; the contract in :mod:`pathfm.data.readers`),
the exact-grid reads the tiffslide and wsidicom backends share (:class:`GridSlideReader`), the thumbnail, and
the error of a read that fails."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from pathfm.data.reader_choice import is_remote, local_path
from pathfm.errors import SlideError


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
            raise read_failure(self, level, location, e) from e

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


def mean_mpp(values) -> float | None:
    vals = [v for v in map(_positive, values) if v is not None]
    return float(np.mean(vals)) if vals else None


def read_failure(reader: SlideReader, level: int, location, e: Exception) -> SlideError:
    """A failed read of a slide that opened: a local file cut short says so (pathfm.data.unreadable)."""
    if not is_remote(reader.uri) and local_path(reader.uri).is_file():
        from pathfm.data.unreadable import RECOPY, truncation

        damage = truncation(local_path(reader.uri))
        if damage:
            return SlideError(f"{reader.uri}: {damage}: {RECOPY}")
    return SlideError(f"{reader.uri}: {reader.backend} could not read level {level} at {location}: {e}")
