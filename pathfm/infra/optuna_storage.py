"""Where a plain Optuna study keeps its state, made safe for shared filesystems.

* ``sqlite:///PATH`` -- one host. SQLite's locking relies on ``fcntl()``, which is unreliable on network
  filesystems (NFS, CIFS/SMB, Lustre, GPFS, BeeGFS, CephFS, ...: see https://www.sqlite.org/faq.html#q5),
  and concurrent writers there can corrupt the study. :func:`check_storage` refuses SQLite on such a
  filesystem when more than one worker runs, naming the fix. The filesystem type is read from
  ``/proc/mounts`` (the longest mount point above the database's folder; :func:`filesystem_type`).
* ``journal:///PATH`` -- Optuna's ``JournalStorage`` on a ``JournalFileBackend`` with an ``O_EXCL`` open lock
  (``JournalFileOpenLock``, NFSv3 or later): an append-only log that needs no server and is safe for
  workers on several hosts sharing the folder. It has no heartbeats (Optuna supports them on RDB
  storages only), so a trial whose worker died is found by its trial folder going quiet instead
  (:func:`pathfm.sweeps.optuna_study` uses the same grace period).
* any other SQLAlchemy URL (``postgresql://``, ``mysql://``) -- a database server, the choice for many hosts.

Heartbeat grace: a trial is declared dead after ``grace`` seconds without a heartbeat.
:func:`heartbeat_grace` keeps it above twice the heartbeat interval and above 1.5 x the longest pause
measured in this sweep's finished trials (the evaluation and checkpointing time outside the training loop,
``wall_time_s - train_time_s`` in ``trial.json``), so a slow evaluation is never mistaken for a dead worker.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from pathfm.errors import PathfmError
from pathfm.records.sweep_folder import OPTUNA_DB_FILE

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs", "fuse.glusterfs", "ceph",
    "fuse.ceph", "fuse.cephfs", "cephfs", "9p", "afs", "panfs", "pvfs2", "orangefs", "fuse.sshfs", "ncpfs",
    "fuse.gcsfuse", "fuse.s3fs", "fuse.rclone", "wekafs", "fuse.juicefs", "quobyte", "fuse.quobyte",
})  # fmt: skip
JOURNAL_SCHEME = "journal:///"
JOURNAL_MIN_QUIET_S = 600  # a journal trial is dead only after this long without a write in its folder (at least)
SQLITE_SCHEME = "sqlite:///"


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """``(mount point, filesystem type)`` of each line of a ``/proc/mounts`` table (octal escapes such as
    ``\\040`` for a space decoded)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].encode().decode("unicode_escape") if "\\" in fields[1] else fields[1]
            out.append((point, fields[2]))
    return out


def filesystem_type(path: str | Path, mounts_text: str | None = None) -> tuple[str, str] | None:
    """``(filesystem type, mount point)`` holding ``path`` (which need not exist yet), from the mount table
    ``mounts_text`` (default: this machine's ``/proc/mounts``); None when no table can be read."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return None
    p = Path(path).expanduser().absolute()
    best: tuple[str, str] | None = None
    for point, fstype in parse_mounts(mounts_text):
        mp = point.rstrip("/") or "/"
        if mp == "/" or p == Path(mp) or Path(mp) in p.parents:
            if best is None or len(mp) >= len(best[1]):
                best = (fstype, mp)
    return best


def is_network_filesystem(fstype: str) -> bool:
    return fstype.lower() in NETWORK_FILESYSTEMS or fstype.lower().startswith("nfs")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs and in-memory SQLite)."""
    if not url.startswith(SQLITE_SCHEME):
        return None
    rest = url[len(SQLITE_SCHEME):].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def journal_path(url: str) -> Path | None:
    """The log file of a ``journal:///`` URL (None for other URLs)."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    rest = url[len(JOURNAL_SCHEME):]  # as for sqlite:///: journal:///rel/path, journal:////abs/path
    if not rest:
        raise PathfmError(f"--storage {url}: give the journal file, e.g. journal:////shared/sweeps/study.journal")
    return Path(rest)


def check_storage(url: str, workers: int, mounts_text: str | None = None) -> None:
    """Refuse SQLite on a network filesystem when more than one worker will write to it (PathfmError with the fix)."""
    db = sqlite_path(url)
    if db is None or workers <= 1:
        return
    found = filesystem_type(db, mounts_text)
    if found is None or not is_network_filesystem(found[0]):
        return
    fstype, mount = found
    raise PathfmError(
        f"--storage {url}: the SQLite file is on a {fstype} network filesystem (mounted at {mount}) and {workers} "
        "workers would write to it; SQLite's file locking is unreliable there and can corrupt the study. Use "
        f"the file-locked journal (--storage {JOURNAL_SCHEME}{db.with_suffix('.journal').as_posix()}), "
        "a database server (--storage postgresql://USER@HOST/DB), or --workers 1")


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def open_checked(url: str, make: Callable[[str], Any]) -> Any:
    """``make(url)``, the study storage, proven readable (its studies listed) before any trial; one that cannot
    be opened (a damaged file, a folder that cannot be written, a server that refuses) is :func:`storage_error`."""
    try:
        if (db := sqlite_path(url)) is not None:
            db.expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)  # SQLite creates no folders
        if (journal := journal_path(url)) is not None and _last_line_cut(journal):  # Optuna would append to it
            raise ValueError("its last line is cut off (a writer stopped mid-write)")
        storage = make(url)
        storage.get_all_studies()
    except PathfmError:
        raise
    except Exception as e:  # noqa: BLE001 - SQLAlchemy, sqlite3, OSError, a damaged journal: each is told the same way
        raise storage_error(url, e) from None
    return storage


def storage_error(url: str, error: BaseException) -> PathfmError:
    """One line saying why the storage at ``url`` cannot be opened or written (``error``) and the fix."""
    from pathfm.io import redact_url

    text = str(error).strip()
    reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    shown = f"--storage {redact_url(url)}"
    db, journal = sqlite_path(url), journal_path(url)
    path = db if db is not None else journal
    if path is None:
        return PathfmError(f"{shown}: the study storage cannot be opened ({reason}); check the URL, that the "
                           "database server runs and that this user may create tables in it")
    path = path.expanduser().absolute()
    if _damaged(path, error, sqlite=db is not None):
        kind = "a SQLite database" if db is not None else "an Optuna journal"
        return PathfmError(f"{shown}: {path} is not {kind} (damaged, or another kind of file: {reason}); move it "
                           "aside and run again to start the study in a new file, or give the path of a backup")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    why = f"{blocker} is a file, not a folder; " if blocker is not None else ""
    return PathfmError(f"{shown}: {path} cannot be created or written ({why}{reason}); give a path in a folder you "
                       f"can write to (leave out --storage for <sweep folder>/{OPTUNA_DB_FILE})")


def _last_line_cut(path: Path) -> bool:
    path = Path(path).expanduser()
    if not path.is_file() or not path.stat().st_size:
        return False
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def _damaged(path: Path, error: BaseException, *, sqlite: bool) -> bool:
    """Whether the file at ``path`` exists but is no SQLite database (its header) or no readable journal."""
    if not path.is_file() or not path.stat().st_size:
        return False
    if sqlite:
        with open(path, "rb") as f:
            return not f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    return isinstance(error, (ValueError, AssertionError))  # JSON or UTF-8 decoding, Optuna's own log checks


def heartbeat_grace(heartbeat_s: int, longest_pause_s: float | None) -> int:
    """Seconds without a heartbeat before a trial counts as dead: at least 2 x the heartbeat interval and
    more than 1.5 x the longest measured pause (pure)."""
    grace = 2 * int(heartbeat_s)
    if longest_pause_s is not None and math.isfinite(longest_pause_s) and longest_pause_s > 0:
        grace = max(grace, math.ceil(1.5 * longest_pause_s) + int(heartbeat_s))
    return grace


def dead_after(heartbeat_s: int, longest_pause_s: float | None, url: str) -> int:
    """Seconds of silence after which a trial counts as dead: :func:`heartbeat_grace`, and for a journal
    storage (no heartbeats: silence = no write in the trial folder, which a long step or evaluation also
    causes) never less than :data:`JOURNAL_MIN_QUIET_S`."""
    grace = heartbeat_grace(heartbeat_s, longest_pause_s)
    return max(grace, JOURNAL_MIN_QUIET_S) if url.startswith(JOURNAL_SCHEME) else grace


def longest_pause(trial_infos: list[dict[str, Any]]) -> float | None:
    """The longest time a finished trial spent outside its training loop (evaluation, checkpoints, start-up):
    ``wall_time_s - train_time_s`` over the trials' ``trial.json`` contents; None when none recorded both."""
    pauses = [float(t["wall_time_s"]) - float(t["train_time_s"]) for t in trial_infos
              if isinstance(t.get("wall_time_s"), (int, float)) and isinstance(t.get("train_time_s"), (int, float))]
    return max(pauses) if pauses else None


def journal_storage(path: Path):
    """Optuna's JournalStorage on a file, with an ``O_EXCL`` open lock (safe on NFSv3+ shared folders)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
