"""Why a slide file cannot be read, for the error that names it: the advice depends on the cause.

* an empty or truncated file (an interrupted copy or download): said so, with the byte its own TIFF structure
  needs and the file's size; copying it again is the fix, not converting it;
* a format that the failing backend cannot read but another installed one can (an OME-TIFF or a plain strip
  TIFF that openslide refuses and tiffslide reads): that reader is named, with the setting that selects it;
* otherwise the backend's own message (and, for an unsupported format, the advice to convert it).

Only called after a read failed, on local files; nothing here runs for slides that open.
"""

from __future__ import annotations

import logging
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from pathfm.errors import SlideError

_TIFF_MAGIC = {b"II*\0": ("<", False), b"MM\0*": (">", False), b"II+\0": ("<", True), b"MM\0+": (">", True)}
RECOPY = "an interrupted copy or download; copy the slide again (compare its size or checksum with the source) " \
         "or remove it from the manifest"


def _ifd_chain_needs(path: Path, size: int) -> int:
    """The byte a TIFF's chain of image directories needs the file to reach. Directories only (count, entries,
    next offset); the image data they point to is checked by :func:`truncation`."""
    with open(path, "rb") as f:
        head = f.read(16)
        order, big = _TIFF_MAGIC[head[:4]]
        count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        if len(head) < (16 if big else 8):
            return 16 if big else 8
        offset = struct.unpack(order + offset_fmt, head[8:16] if big else head[4:8])[0]
        needs, seen = len(head), set()
        while offset and offset not in seen and len(seen) < 100_000:
            seen.add(offset)
            if offset + count_size > size:
                return offset + count_size
            f.seek(offset)
            n = struct.unpack(order + count_fmt, f.read(count_size))[0]
            end = offset + count_size + n * entry_size + offset_size
            if end > size:
                return end
            f.seek(end - offset_size)
            offset = struct.unpack(order + offset_fmt, f.read(offset_size))[0]
            needs = max(needs, end)
        return needs


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs every broken page offset: the error message says it once."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def truncation(path: Path, *, data: bool = True) -> str | None:
    """How ``path`` is cut short or damaged, as a phrase for the error ("the file is empty (0 bytes)", "the file
    is truncated (...)"), or None when nothing shows (not a TIFF-family file, or a complete one). ``data=False``:
    the image directories only (a few small reads, cheap enough for every open), not the data they point to."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        if f.read(4) not in _TIFF_MAGIC:
            return None  # not a TIFF-family file: nothing to measure it by
    # NDPI keeps offsets past 4 GiB outside the TIFF fields: its directories are left to tifffile
    needs = 8 if path.suffix.lower() == ".ndpi" else _ifd_chain_needs(path, size)
    if needs <= size and data:  # the directories are there: does the image data they point to lie inside the file?
        import tifffile

        try:
            with _quiet_tifffile(), tifffile.TiffFile(path) as tf:
                needs = max([needs] + [o + n for page in tf.pages for o, n in zip(page.dataoffsets, page.databytecounts)])
        except Exception as e:  # noqa: BLE001 - tifffile raises many types for a damaged structure
            return f"the file's TIFF structure is corrupt ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
    if needs > size:
        return f"the file is truncated ({size} bytes, but its own TIFF structure refers to byte {needs})"
    return None


def _kind(path: Path) -> str:
    """What kind of file it is, for "cannot read this ...": an OME-TIFF, an untiled TIFF, or a file format."""
    try:
        import tifffile

        with _quiet_tifffile(), tifffile.TiffFile(path) as tf:
            if tf.is_ome:
                return "OME-TIFF"
            if len(tf.pages) and not tf.pages[0].is_tiled:
                return "untiled (strip) TIFF"
            return "TIFF"
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads
        return "file format"


def reader_that_opens(path: Path, failed: str, opens: Callable[[str], bool]) -> str | None:
    """Another backend than ``failed`` for which ``opens(name)`` (open ``path``, read a pixel) succeeds, or None."""
    for name in ("openslide", "tiffslide"):
        if name == failed:
            continue
        try:
            with _quiet_tifffile():
                if opens(name):
                    return name
        except Exception:  # noqa: BLE001 - not installed, or it cannot read this file either
            continue
    return None


def unreadable_slide(path: Path, backend: str, fallback: str, opens: Callable[[str], bool]) -> SlideError:
    """The SlideError for a local slide file ``backend`` failed on: the cause when one shows (:func:`truncation`),
    else another installed reader that opens it (``opens(name)``: pathfm.data.readers tries it), else
    ``fallback`` (the message with the backend's own advice)."""
    damage = truncation(path) if path.is_file() else None
    if damage:
        return SlideError(f"{path}: {damage}: {RECOPY}")
    other = reader_that_opens(path, backend, opens) if path.is_file() else None
    if other:
        return SlideError(f"{path}: {backend} cannot read this {_kind(path)}, but {other} (installed) reads it: set "
                          f"data.reader={other} (pathfm data scan --reader {other})")
    return SlideError(fallback)
