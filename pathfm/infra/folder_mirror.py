"""One local folder and its copy in an object store (:class:`FolderMirror`), and the file transfers under it.

A trial of a sweep on ``--storage s3://bucket/sweeps`` runs in the staging folder
(:func:`pathfm.infra.object_store.staging_dir`, the driver's absolute path, the same on every node, as Ray's own
``storage_path``). :class:`FolderMirror` is that folder's link to ``URI/<sweep>/<trial folder>`` (or the sweep
folder's link to ``URI/<sweep>``); which folders are mirrored when is :mod:`pathfm.infra.sweep_sync`:

* :meth:`FolderMirror.push` uploads the files that changed since the last push (size or mtime differs from
  the local manifest ``.pathfm_pushed.json``, or the store lacks the file or holds another size of it),
  deletes from the store the files it pushed that are gone locally (checkpoints pruned by
  ``run.keep_checkpoints``), and uploads ``trial.json`` last, so the store never shows a trial finished before
  its files are there.
* :meth:`FolderMirror.restore` runs when a trial starts or is restored: when the local folder lacks
  ``trial.json`` or the store's ``trial.json`` is from a later attempt (``attempt_started_at``), the trial is
  pulled from the store first, so a trial restarted on another node resumes from its last pushed checkpoint;
  otherwise only the files the local folder lacks are fetched.

Uploads are atomic for readers: on filesystems that rename atomically (local, HDFS, and a pyarrow
``SubTreeFileSystem`` over them) a file is written under a hidden temporary name (``.<name>.<random>.part``)
and moved into place; on object stores (S3, GCS, Azure, fsspec's memory) an object becomes visible only when
its upload completes, so it is written in place (their "move" is a copy). Checkpoint files are written once
under names that carry their step, so a pull skips a checkpoint file already present locally with the store's
size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pathfm.errors import PathfmError
from pathfm.io import atomic_path, atomic_write_json
from pathfm.infra.object_store import RemoteStorage
from pathfm.records import RunFolder, TrialRecord
from pathfm.records.run_folder import CHECKPOINTS_DIR, SYNC_MANIFEST_FILE, TRIAL_FILE

PART_SUFFIX = ".part"  # an upload in progress on a renaming filesystem
CHECKPOINTS_PREFIX = CHECKPOINTS_DIR + "/"  # files written once, named by their step


def is_transient(rel: str) -> bool:
    """Files never synced: the manifest, pathfm's atomic-write temporaries (``.<name>.<random>.tmp``) and
    uploads in progress (``.<name>.<random>.part``)."""
    name = rel.rsplit("/", 1)[-1]
    return name == SYNC_MANIFEST_FILE or (name.startswith(".") and name.endswith((".tmp", PART_SUFFIX)))


def local_files(folder: Path, skip_dirs: frozenset[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """``{relative posix path: (size, mtime_ns)}`` of the files under ``folder`` (transient files left out;
    ``skip_dirs``: top-level folder names left out)."""
    out: dict[str, tuple[int, int]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == folder:
            dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if is_transient(rel):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while we walked (a pruned checkpoint)
                continue
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def relative_to_root(path: str, root: str) -> str | None:
    """``path`` (as a filesystem lists it) relative to ``root``; None when it is not under ``root``."""
    p, r = path.strip("/"), root.strip("/")
    if not r:
        return p
    return p[len(r) + 1:] if p.startswith(r + "/") else None


def stored_files(remote: RemoteStorage) -> dict[str, int]:
    """``{relative path: size}`` of the files under ``remote`` (one recursive listing; {} when absent)."""
    import pyarrow.fs as pafs

    try:
        infos = remote.filesystem.get_file_info(pafs.FileSelector(remote.root, recursive=True, allow_not_found=True))
    except OSError as e:
        raise PathfmError(f"listing {remote.uri} failed: {e}") from None
    out = {}
    for info in infos:
        rel = relative_to_root(info.path, remote.root)
        if info.type == pafs.FileType.File and rel and not is_transient(rel):
            out[rel] = int(info.size or 0)
    return out


def renames_atomically(filesystem: Any) -> bool:
    """Whether ``filesystem.move`` of a file is an atomic rename (local disks, HDFS); on object stores it
    is a copy, and an upload is atomic by itself."""
    while getattr(filesystem, "type_name", "") == "subtree":
        filesystem = filesystem.base_fs
    name = getattr(filesystem, "type_name", "")
    return name in ("local", "hdfs") or (name.startswith("py::fsspec") and ("file" in name or "local" in name))


def upload_file(src: Path, filesystem: Any, dest: str) -> None:
    """Copy the local file ``src`` to ``dest`` so that no reader sees it half-written (module docstring)."""
    parent, _, name = dest.rpartition("/")
    if parent:
        filesystem.create_dir(parent, recursive=True)
    target = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}" if renames_atomically(filesystem) else dest
    try:
        with open(src, "rb") as f, filesystem.open_output_stream(target) as out:
            shutil.copyfileobj(f, out, 8 * 2**20)
        if target != dest:
            filesystem.move(target, dest)
    except BaseException:
        if target != dest:
            try:
                filesystem.delete_file(target)
            except OSError:
                pass
        raise


def download_file(filesystem: Any, src: str, dest: Path) -> None:
    """Copy ``src`` from the store to the local ``dest`` (written to a temporary name, then renamed)."""
    with filesystem.open_input_stream(src) as f, atomic_path(dest) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(f, out, 8 * 2**20)


def read_stored_json(remote: RemoteStorage, rel: str) -> dict | None:
    """A JSON file in the store (None when it is absent or unreadable)."""
    try:
        with remote.filesystem.open_input_stream(remote.child(rel).root) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


class FolderMirror:
    """A local folder and its copy in the store (module docstring); also a trainer callback that pushes
    after every checkpoint. ``skip_dirs``: top-level folders of ``local`` that are not synced."""

    def __init__(self, local: Path, remote: RemoteStorage, skip_dirs: frozenset[str] = frozenset()):
        self.local, self.remote, self.skip_dirs = Path(local), remote, skip_dirs

    @property
    def manifest_path(self) -> Path:  # {relative path: [size, mtime_ns]} as last pushed/pulled
        return RunFolder(self.local).sync_manifest

    def read_manifest(self) -> dict[str, list[int]]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    @contextmanager
    def updating_manifest(self, action: str) -> Iterator[dict[str, list[int]]]:
        """The manifest to update, written back however the block ends (an OSError in it: a PathfmError
        naming ``action``)."""
        manifest = self.read_manifest()
        try:
            yield manifest
        except OSError as e:
            raise PathfmError(f"{action} failed: {e}") from None
        finally:
            if self.local.is_dir():
                atomic_write_json(self.manifest_path, manifest)

    def remote_path(self, rel: str) -> str:
        return self.remote.child(rel).root

    def locally_unchanged(self) -> bool:
        """Every local file has the size and mtime the manifest recorded at the last push or pull, so a push
        can be skipped without listing the store."""
        manifest = self.read_manifest()
        here = local_files(self.local, self.skip_dirs)
        return all(manifest.get(rel) == [size, mtime] for rel, (size, mtime) in here.items())

    def push(self) -> list[str]:
        """Upload what changed (``trial.json`` last), delete what was pushed and is gone; returns the
        relative paths uploaded. A failed upload is a PathfmError (the next push retries it)."""
        if not self.local.is_dir():
            return []
        here = local_files(self.local, self.skip_dirs)
        stored = stored_files(self.remote)
        with self.updating_manifest(f"uploading {self.local} to {self.remote.uri}") as manifest:
            changed = [rel for rel, (size, mtime) in here.items()
                       if manifest.get(rel) != [size, mtime] or stored.get(rel) != size]
            changed.sort(key=lambda rel: (rel == TRIAL_FILE, rel))  # trial.json last; a checkpoint before its sidecar
            for rel in changed:
                if rel == TRIAL_FILE:
                    self._delete_gone(manifest, here, stored)
                upload_file(self.local / rel, self.remote.filesystem, self.remote_path(rel))
                manifest[rel] = list(here[rel])
            if TRIAL_FILE not in changed:
                self._delete_gone(manifest, here, stored)
        return changed

    def _delete_gone(self, manifest: dict, here: dict, stored: dict) -> None:
        gone = [rel for rel in manifest if rel not in here]
        for rel in gone:
            if rel in stored:
                self.remote.filesystem.delete_file(self.remote_path(rel))
            del manifest[rel]
        for parent in sorted({rel.rsplit("/", 1)[0] for rel in gone if "/" in rel}, key=len, reverse=True):
            if not (self.local / parent).exists() and not any(r.startswith(parent + "/") for r in here):
                try:  # a pruned sharded checkpoint's directory
                    self.remote.filesystem.delete_dir(self.remote_path(parent))
                except OSError:
                    pass

    def pull(self, skip_prefixes: tuple[str, ...] = (), *, only_missing: bool = False) -> list[str]:
        """Download the store's files into the local folder (files under ``skip_prefixes`` left out; a
        checkpoint file already here with the store's size is kept; ``only_missing``: every file already here
        is kept); returns the relative paths downloaded."""
        stored = stored_files(self.remote)
        fetched = []
        with self.updating_manifest(f"downloading {self.remote.uri} to {self.local}") as manifest:
            for rel in sorted(stored, key=lambda rel: (rel == TRIAL_FILE, rel)):
                if rel.startswith(skip_prefixes):
                    continue
                dest = self.local / rel
                if only_missing and dest.exists():
                    continue
                if not (rel.startswith(CHECKPOINTS_PREFIX) and dest.is_file() and dest.stat().st_size == stored[rel]):
                    download_file(self.remote.filesystem, self.remote_path(rel), dest)
                    fetched.append(rel)
                st = dest.stat()
                manifest[rel] = [st.st_size, st.st_mtime_ns]
        return fetched

    def store_is_ahead(self) -> bool:
        """The store holds this trial and the local folder does not, or holds an earlier attempt of it."""
        stored = read_stored_json(self.remote, TRIAL_FILE)
        if stored is None:
            return False
        here = TrialRecord.read(self.local)
        if here is None:
            return True
        return float(TrialRecord.from_dict(stored).attempt_started_at or 0) > float(here.attempt_started_at or 0)

    def restore(self, skip_prefixes: tuple[str, ...] = ()) -> list[str]:
        """Pull the trial from the store when the store is ahead (:meth:`store_is_ahead`), else only the files
        this folder lacks (a trial folder the driver gathered without its checkpoints, then run here)."""
        return self.pull(skip_prefixes, only_missing=not self.store_is_ahead())

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.push_or_warn(f"after the checkpoint of step {step}")

    def push_or_warn(self, when: str) -> None:
        """Push; a failure is a warning on stderr (training goes on, the next push retries)."""
        try:
            self.push()
        except PathfmError as e:
            print(f"pathfm sweep: warning: {when}: {e}", file=sys.stderr, flush=True)
