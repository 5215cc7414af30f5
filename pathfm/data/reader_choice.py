"""Which backend reads a slide (``data.reader``; the ``auto`` rule in :mod:`pathfm.data.readers`), how its URI is
taken apart (scheme, remote or local path, DICOM folder), and the options slides are opened with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pathfm.errors import ConfigError

READERS = ("auto", "openslide", "tiffslide", "wsidicom")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


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
