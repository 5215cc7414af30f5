"""A tiled TIFF/SVS pyramid level decoded at a reduced resolution, straight from its compressed tiles.

The tissue-mask thumbnail needs a level only at about the thumbnail's size, but openslide decodes it at full
size (the one-level CMU-1-Small-Region.svs: all 6.6 Mpx, 70 % of a scan's CPU time). Both common
whole-slide compressions can be decoded smaller for a fraction of the cost:

* JPEG (TIFF compression 7, RGB or YCbCr): libjpeg-turbo's scaled inverse DCT gives 1/2, 1/4 or 1/8 of
  each tile (OpenCV's ``IMREAD_REDUCED_COLOR_*``); at full scale the pixels equal openslide's.
* JPEG 2000 as Aperio writes it with RGB samples (compression 33005): OpenJPEG through Pillow decodes a
  lower wavelet resolution (``reduce``), skipping the finest sub-bands.

:func:`decode_level_reduced` picks the largest reduction whose image is still at least ``min_size`` and
returns ``None`` whenever it cannot decode the level itself (not a TIFF, no single tiled page of the
level's size, another compression or sample layout, a missing tile, a tile that fails to decode): the caller
then reads the level as before. tifffile only locates the tiles (offsets, byte counts, JPEG tables).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

JPEG, APERIO_JP2K_RGB = 7, 33005
RGB, YCBCR = 2, 6
MAX_SHIFT = 3  # libjpeg scales by 1/2, 1/4, 1/8; JPEG 2000 is held to the same range
# An Adobe APP14 segment with transform 0: tells libjpeg the three components are RGB, not YCbCr (what
# openslide does for TIFF photometric RGB, e.g. Aperio's JPEG tiles)
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def reduction_shift(level_size: tuple[int, int], min_size: tuple[int, int], max_shift: int = MAX_SHIFT) -> int:
    """The largest ``s <= max_shift`` for which the level decoded at 1/2**s (each side rounded up, as
    libjpeg and OpenJPEG round) is still at least ``min_size`` on both sides; 0 if none is."""
    for s in range(max_shift, 0, -1):
        if all(math.ceil(n / (1 << s)) >= m for n, m in zip(level_size, min_size)):
            return s
    return 0


def jpeg_stream(tile: bytes, tables: bytes | None, rgb: bool) -> bytes:
    """A self-contained JPEG from a TIFF tile: the shared JPEGTables spliced in after its SOI, and the Adobe
    marker for RGB samples."""
    body = tile[2:] if tables is None else tables[2:-2] + tile[2:]  # tables: SOI ... EOI
    return b"\xff\xd8" + (ADOBE_RGB if rgb else b"") + body


def level_page(tif, size: tuple[int, int]):
    """The one tiled top-level page of ``size`` (width, height), or None (none, or ambiguous)."""
    pages = [p for p in tif.pages if p.is_tiled and (p.imagewidth, p.imagelength) == tuple(size)]
    return pages[0] if len(pages) == 1 else None


def decodable(page) -> bool:
    """True for the tile layouts :func:`decode_level_reduced` decodes: 8-bit, 3 samples interleaved, one
    plane; JPEG with RGB or YCbCr samples, or Aperio's RGB JPEG 2000."""
    if (page.samplesperpixel, page.bitspersample, page.planarconfig, page.imagedepth) != (3, 8, 1, 1):
        return False
    if page.compression == JPEG:
        return page.photometric in (RGB, YCBCR)
    return page.compression == APERIO_JP2K_RGB and page.photometric == RGB


def decode_tile(data: bytes, page, shift: int) -> np.ndarray | None:
    """(h, w, 3) RGB of one compressed tile at 1/2**shift, or None if it does not decode."""
    if page.compression == JPEG:
        import cv2

        # the IMREAD_REDUCED_COLOR_* scale bits, with RGB output instead of their BGR
        scale = (cv2.IMREAD_COLOR, cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4,
                 cv2.IMREAD_REDUCED_COLOR_8)[shift] & ~cv2.IMREAD_COLOR
        if page.photometric == RGB and data[2:4] == b"\xff\xe0":
            return None  # a JFIF marker makes libjpeg read YCbCr whatever the Adobe marker says
        stream = jpeg_stream(data, page.jpegtables, page.photometric == RGB)
        rgb = cv2.imdecode(np.frombuffer(stream, np.uint8),
                           scale | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        return None if rgb is None or rgb.ndim != 3 else rgb
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.reduce = shift  # JPEG 2000: decode this many resolution levels below the full one
    return np.asarray(im.convert("RGB"))


def decode_level_reduced(source, level_size: tuple[int, int], min_size: tuple[int, int]) -> np.ndarray | None:
    """The pyramid level of ``level_size`` in ``source`` (a TIFF's path, or an open ``tifffile.TiffFile``, left
    open) as an (h, w, 3) uint8 RGB array of ``ceil(level_size / 2**s)`` with ``s`` from
    :func:`reduction_shift`, or None when this module cannot decode it (see the module docstring; the caller
    falls back to its reader)."""
    import tifffile

    if isinstance(source, tifffile.TiffFile):
        return decode_page_reduced(source, level_size, min_size)
    try:
        tif = tifffile.TiffFile(str(source))
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    with tif:
        return decode_page_reduced(tif, level_size, min_size)


def decode_page_reduced(tif, level_size: tuple[int, int], min_size: tuple[int, int]) -> np.ndarray | None:
    """:func:`decode_level_reduced` on an open ``tifffile.TiffFile``."""
    page = level_page(tif, level_size)
    if page is None or not decodable(page) or 0 in page.databytecounts:
        return None
    shift = reduction_shift(level_size, min_size)
    tw, th = page.tilewidth >> shift, page.tilelength >> shift
    if (tw << shift, th << shift) != (page.tilewidth, page.tilelength):
        return None  # tiles not a multiple of 2**shift (TIFF asks for multiples of 16)
    cols, rows = -(-page.imagewidth // page.tilewidth), -(-page.imagelength // page.tilelength)
    if len(page.dataoffsets) != rows * cols:
        return None
    out = np.empty((rows * th, cols * tw, 3), np.uint8)
    fh = tif.filehandle
    for data, i in fh.read_segments(page.dataoffsets, page.databytecounts, lock=fh.lock):
        try:
            tile = decode_tile(data, page, shift)
        except Exception:  # noqa: BLE001 - a tile the decoder rejects: the caller's reader decides
            return None
        if tile is None or tile.shape != (th, tw, 3):
            return None
        r, c = divmod(i, cols)
        out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    w, h = (-(-n // (1 << shift)) for n in level_size)
    return out[:h, :w]
