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

The parts, each re-exported here: :mod:`pathfm.data.reader_choice` (URIs, the ``auto`` rule, ReaderOptions),
:mod:`pathfm.data.slide_reader` (the interface, exact-grid reads, the thumbnail), :mod:`pathfm.data.block_cache`
(remote bytes) and :mod:`pathfm.data.slide_backends` (openslide, tiffslide, wsidicom); :func:`open_reader` is here.
"""

from __future__ import annotations

from pathlib import Path

from pathfm.data.block_cache import BlockCachedFile
from pathfm.data.reader_choice import (READERS, ReaderOptions, choose_reader, is_dicom_folder, is_remote, local_path,
                                       uri_scheme)
from pathfm.data.slide_backends import (OPENSLIDE_FORMATS, REDUCED_DECODE_VENDORS, OpenSlideReader, TiffSlideReader,
                                        WsiDicomReader, level0_for)
from pathfm.data.slide_reader import GridSlideReader, SlideReader, thumbnail_size
from pathfm.errors import SlideError

__all__ = [
    "OPENSLIDE_FORMATS", "READERS", "REDUCED_DECODE_VENDORS",
    "BlockCachedFile", "GridSlideReader", "OpenSlideReader", "ReaderOptions", "SlideReader", "TiffSlideReader",
    "WsiDicomReader",
    "choose_reader", "is_dicom_folder", "is_remote", "level0_for", "local_path", "open_reader", "thumbnail_size",
    "uri_scheme",
]


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
