"""Sweep storage on object stores and other filesystems: ``--storage s3://bucket/sweeps`` (any URI pyarrow
or fsspec opens: ``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``az://``, ``memory://`` ...).

pathfm's trainer writes each trial folder (checkpoints, ``metrics.jsonl``, ``trial.json``, ``eval.parquet``)
with ordinary file I/O, so a sweep on an object store runs in a local *staging* folder
(``$PATHFM_SWEEP_STAGING``, default ``~/.cache/pathfm/sweeps``, + the URI's host and path); each trial pushes
its own folder to the URI from the node it runs on, and the driver the sweep-level files when the sweep ends
(also when it stops early); ``pathfm sweep collect URI/NAME`` rebuilds ``results.parquet`` from the trial
folders in the store and writes it back there (:mod:`pathfm.infra.sweep_sync`, transfers in
:mod:`pathfm.infra.folder_mirror`). This module opens the store and names the staging folder.

The filesystem is ``pyarrow.fs.FileSystem.from_uri`` (s3, gs, abfs, hdfs: the filesystems Ray's
``RunConfig(storage_path=...)`` accepts), else fsspec's (``fsspec.core.url_to_fs``, wrapped as a pyarrow
filesystem); a filesystem object can also be given directly (:func:`open_storage`). Plain paths and
``file:///abs/path`` URIs stay local folders, written in place as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError
from pathfm.records import SweepFolder

STAGING_ENV = "PATHFM_SWEEP_STAGING"
FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                   "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}  # fmt: skip


@dataclass(frozen=True)
class RemoteStorage:
    """A sweep storage location behind a (pyarrow) filesystem: ``uri`` as the user wrote it, ``filesystem``
    and ``root`` (the path inside that filesystem)."""

    uri: str
    filesystem: Any  # pyarrow.fs.FileSystem
    root: str

    def child(self, name: str) -> "RemoteStorage":
        return RemoteStorage(f"{self.uri.rstrip('/')}/{name}", self.filesystem, f"{self.root.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]


def is_uri(storage: str | Path) -> bool:
    return "://" in str(storage)


def local_root(storage: str | Path) -> Path:
    """A plain path (relative ones resolved against the cwd) or a ``file:///abs`` URI as a local folder."""
    s = str(storage)
    if s.startswith("file://"):
        rest = s.removeprefix("file://")
        if not rest.startswith("/"):
            raise PathfmError(f"storage '{s}': a file:// URI needs an absolute path (file:///abs/path, three "
                              "slashes); for a relative folder give the plain path")
        return Path(rest)
    if is_uri(s):
        raise PathfmError(f"storage '{s}' is a URI, not a local path")
    return Path(s).expanduser().resolve()


def open_storage(storage: str, filesystem: Any = None) -> RemoteStorage:
    """The filesystem behind ``storage`` (a URI other than ``file://``), or ``filesystem`` (a pyarrow or
    fsspec filesystem object) with ``storage`` its path. A missing backend names the package to install."""
    import pyarrow.fs as pafs

    if filesystem is not None:
        return RemoteStorage(storage, _as_pyarrow(filesystem), storage.split("://", 1)[-1])
    scheme = storage.split("://", 1)[0].lower()
    try:
        fs, root = pafs.FileSystem.from_uri(storage)
        return RemoteStorage(storage, fs, root)
    except Exception as arrow_error:  # pyarrow.lib.ArrowInvalid / ArrowNotImplementedError: not a pyarrow scheme
        arrow_msg = str(arrow_error).splitlines()[0]
    try:
        import fsspec.core
    except ImportError:
        raise PathfmError(f"storage '{storage}': pyarrow cannot open it ({arrow_msg}) and fsspec is not installed; "
                          "pip install 'pathfm[remote]'") from None
    try:
        fs, root = fsspec.core.url_to_fs(storage)
    except ImportError as e:
        pkg = FSSPEC_PACKAGES.get(scheme, "the fsspec backend for it")
        raise PathfmError(f"storage '{storage}': the {scheme}:// filesystem needs {pkg} ({e}); pip install "
                          f"'pathfm[remote]' {pkg if pkg in FSSPEC_PACKAGES.values() else ''}".rstrip()) from None
    except ValueError as e:
        raise PathfmError(f"storage '{storage}': no filesystem for the scheme '{scheme}' ({e})") from None
    return RemoteStorage(storage, _as_pyarrow(fs), root)


def _as_pyarrow(fs: Any):
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.FileSystem):
        return fs
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def staging_dir(remote: RemoteStorage) -> Path:
    """The local folder a sweep on ``remote`` runs in (``$PATHFM_SWEEP_STAGING`` or ~/.cache/pathfm/sweeps,
    + scheme and path of the URI, so two stores never share one)."""
    base = Path(os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "pathfm" / "sweeps").expanduser()
    scheme, _, rest = remote.uri.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    return base.resolve().joinpath(scheme or "fs", *parts)


def record_mirror(sweep_dir: Path, remote: RemoteStorage) -> None:
    """Note in the staged ``sweep_dir`` where it is mirrored (read by `pathfm sweep resume`), so a resumed sweep
    mirrors there too, and its own absolute path, which Ray Tune's saved state holds (`pathfm sweep resume URI`)."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    SweepFolder(sweep_dir).mirror_note.write_text(remote.uri + "\n")
    SweepFolder(sweep_dir).staged_at_note.write_text(f"{Path(sweep_dir).resolve()}\n")
