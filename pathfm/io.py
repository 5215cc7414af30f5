"""Small file helpers shared by every part: nothing half-written is ever left behind.

Every file that a run, a sweep or an evaluation produces is written to a temporary file in the same
folder and renamed into place (atomic on POSIX), so a killed process leaves either the old file or the
new one, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def usual_mode(path: str | Path) -> None:
    """Give ``path`` the permissions of any file a user creates (0666 less the umask: 0644 under the usual
    022); ``mkstemp`` and some writers (safetensors, timm's ``save_for_hf``) leave 0600."""
    os.chmod(path, 0o666 & ~_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        usual_mode(tmp_path)  # after the write: a writer that replaces the file (safetensors) makes it 0600 again
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_parquet(path: str | Path, what: str, fix: str) -> Any:
    """``polars.read_parquet(path)``; a file that is not Parquet (or is cut off) is a PathfmError naming it,
    ``what`` it should be (e.g. "manifest") and the ``fix``."""
    import polars as pl

    from pathfm.errors import PathfmError

    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise PathfmError(f"{path}: not readable as a Parquet {what} ({_first_line(e)}); {fix}") from None


def write_parquet(df: Any, path: str | Path, what: str) -> Path:
    """Write the polars frame ``df`` to ``path`` atomically; a failed write (a full disk, a read-only folder) is
    a PathfmError naming the file and the fix, and leaves the previous file as it was."""
    import polars as pl

    from pathfm.errors import PathfmError

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            df.write_parquet(tmp)
    except (pl.exceptions.PolarsError, OSError) as e:
        kept = "the previous file is unchanged" if path.is_file() else "nothing was written"
        raise PathfmError(f"{path}: writing the {what} failed ({_first_line(e)}); {kept}. Make free space on that "
                          "file system (or make the folder writable) and run the command again") from None
    return path


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (one short write: readers never see half a line
    except after a crash mid-write, which :func:`read_jsonl` tolerates)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default, allow_nan=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file, skipping a truncated last line (a crash mid-append)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | Path) -> Path:
    """The checksum sidecar of a file or folder pathfm writes (``step_00000010.pt`` -> ``step_00000010.pt.sha256``,
    one ``sha256sum`` line): the one place that names it."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def folder_files(path: str | Path) -> list[str]:
    """The relative names (posix) of every file under the folder ``path``, in the order :func:`checksum` uses."""
    path = Path(path)
    return [f.relative_to(path).as_posix() for f in sorted(path.rglob("*")) if f.is_file()]


def combine_checksums(file_sha256: Mapping[str, str]) -> str:
    """A folder's checksum from its files' sha256 (relative name -> hex digest): the sha256 over the
    ``<file sha256>  <relative name>`` lines, sorted by name as :func:`folder_files` sorts them."""
    names = sorted(file_sha256, key=lambda n: PurePosixPath(n).parts)
    return hashlib.sha256("".join(f"{file_sha256[n]}  {n}\n" for n in names).encode()).hexdigest()


def checksum(path: str | Path) -> str:
    """sha256 of a file; of a folder (a sharded checkpoint), the sha256 over the sorted
    ``<file sha256>  <relative name>`` lines of every file in it (:func:`combine_checksums`)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    return combine_checksums({name: sha256_file(path / name) for name in folder_files(path)})


def write_checksum(path: str | Path, digest: str | None = None) -> Path:
    """Write ``path``'s sidecar (atomically) from its current bytes, or with ``digest`` when the caller computed
    :func:`checksum` already (a sharded checkpoint's ranks hash their own files); returns the sidecar."""
    path = Path(path)
    side = checksum_path(path)
    atomic_write_text(side, f"{digest or checksum(path)}  {path.name}\n")
    return side


@contextmanager
def atomic_checksummed(path: str | Path) -> Iterator[Path]:
    """:func:`atomic_path` plus the sidecar, written after the rename. An old sidecar is removed first, so a
    reader never pairs the new file with the old checksum (at worst it finds none: a warning, not an error)."""
    checksum_path(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        yield tmp
    write_checksum(path)


def checksum_mismatch(path: str | Path, compute: Callable[[Path], str] | None = None) -> str | None:
    """Why ``path`` does not match its existing sidecar (None when it does); ``compute``: how its checksum is
    computed (default :func:`checksum`; the ranks of a sharded run share the work, pathfm.backbone.sharded_checkpoint)."""
    side = checksum_path(path)
    recorded = (side.read_text().split() or [""])[0]
    actual = (compute or checksum)(Path(path))
    if recorded == actual:
        return None
    return f"sha256 mismatch (file {actual[:12]}..., {side.name} {recorded[:12]}...)"


def verify_checksum(path: str | Path) -> str | None:
    """For readers of weight files pathfm wrote: the verified sha256 of ``path``, or None when it has no
    sidecar (written before pathfm wrote checksums, or copied without it; see :func:`warn_unverified`).
    A sidecar that does not match is a PathfmError naming the file and the fix."""
    from pathfm.errors import PathfmError

    path = Path(path)
    if not checksum_path(path).is_file():
        return None
    why = checksum_mismatch(path)
    if why:
        raise PathfmError(f"{path}: {why}: the file is corrupt or truncated; copy it again from where it was "
                          "written (with its .sha256), or re-create it (pathfm train / pathfm export)")
    return (checksum_path(path).read_text().split() or [""])[0]


def warn_unverified(path: str | Path) -> None:
    """The warning for a pathfm weight file without a sidecar: read anyway, its bytes unverified."""
    import warnings

    path = Path(path)
    warnings.warn(f"{path}: no {checksum_path(path).name} beside it (a file from before pathfm wrote checksums, "
                  "or copied without it): read without verifying its bytes", UserWarning, stacklevel=3)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def redact_url(url: str | None) -> str | None:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (for logs and metadata files);
    strings without a password come back unchanged."""
    import re

    if url is None:
        return None
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^/\s]*@", r"\1:***@", str(url))


def ensure_writable_dir(path: str | Path, what: str) -> Path:
    """Create ``path`` (with parents) and prove it takes a file, or raise a PathfmError naming ``what``
    (e.g. "run directory") and the fix. Call it before any expensive work; it fails for root too when the
    path lies under a regular file, on a read-only or full file system, or under /proc."""
    from pathfm.errors import PathfmError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pathfm_write_test.", dir=path)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise PathfmError(f"{what} '{path}' is not writable ({e.strerror or e}); choose a folder on a writable "
                          "file system with free space") from None
    return path
