"""Object-store sweeps, trial by trial: every trial keeps its folder in sync with the store from the node it
runs on (as Ray Tune uploads a trial's checkpoints from its node), so a multi-node cluster needs no shared
folder for single-process trials (``resources.workers > 1`` DDP trials do not sync from their nodes yet).
Such trials report no Ray checkpoints (:func:`pathfm.sweeps.tune_entry.metrics_only`): the trial folder in
the store is what a restarted trial resumes from.

A trial of a sweep on ``--storage s3://bucket/sweeps`` runs in the staging folder
(:func:`pathfm.sweeps.remote.staging_dir`, the driver's absolute path, the same on every node, as Ray's own
``storage_path``). :class:`FolderMirror` is that folder's link to ``URI/<sweep>/<trial folder>``:

* :meth:`FolderMirror.push` uploads the files that changed since the last push (size or mtime differs from
  the local manifest ``.pathfm_pushed.json``, or the store lacks the file or holds another size of it),
  deletes from the store the files it pushed that are gone locally (checkpoints pruned by
  ``run.keep_checkpoints``), and uploads ``trial.json`` last, so the store never shows a trial finished before
  its files are there. It runs after every checkpoint the trainer writes (trainer callback ``on_checkpoint``)
  and when the trial ends, however it ends (:func:`synced_trial`).
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

The driver uploads the sweep-level files (spec, meta, Tune's experiment and searcher state) whenever they
change while the sweep runs (:class:`SweepFilesMirror`, checked every few seconds and when a trial ends), so a
lost driver node loses no more of the Tune state than Tune's own snapshot period: ``pathfm sweep resume URI``
continues the sweep from the store on another machine (:func:`stage_from_store`). It keeps its end-of-sweep
upload (:func:`mirror_sweep`: the sweep-level files, ``results.parquet`` and whatever changed in the trial
folders it holds) and fetches the trial
folders other nodes pushed, without their checkpoints, before it records a trial's end
(:func:`gather_trial`) and before it collects ``results.parquet`` (:func:`gather_trials`);
``pathfm sweep collect URI`` does the same (:func:`collect_from_store`).
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
from pathfm.records import RunFolder, SweepFolder, TrialRecord
from pathfm.records.run_folder import CHECKPOINTS_DIR, SYNC_MANIFEST_FILE, TRIAL_FILE
from pathfm.records.sweep_folder import META_FILE, RESULTS_FILE, STAGED_AT_FILE, TRIAL_PREFIX
from pathfm.sweeps.remote import RemoteStorage, open_storage, record_mirror, staging_dir

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


def ddp_store_warning(workers: int, alive_nodes: int) -> str | None:
    """One line for an object-store sweep whose DDP trials (``resources.workers > 1``) may run on a node
    other than the driver's: those trials do not sync their folders with the store (only single-process
    trials do), so their files reach it only through a folder shared with the driver. None when not so."""
    if workers <= 1 or alive_nodes <= 1:
        return None
    return (f"DDP trials (resources.workers={workers}) on an object-store sweep over {alive_nodes} nodes: their "
            "trial folders are not synced from the node they run on; give the nodes a shared --storage folder "
            "(docs/cluster.md), or run single-process trials")


@contextmanager
def synced_trial(run_dir: Path, store: RemoteStorage | None) -> Iterator[list[FolderMirror]]:
    """Around one trial attempt on a node: restore ``run_dir`` from ``store/<run_dir name>`` when the store is
    ahead, yield the trainer callbacks (push after every checkpoint), push when the attempt ends, however it
    ends. ``store`` None (a local sweep): nothing, and no callbacks."""
    if store is None:
        yield []
        return
    mirror = FolderMirror(run_dir, store.child(Path(run_dir).name))
    mirror.restore()
    try:
        yield [mirror]
    finally:
        mirror.push_or_warn("when the trial ended")


def trial_mirrors(sweep_dir: Path, store: RemoteStorage) -> list[FolderMirror]:
    """A :class:`FolderMirror` per trial folder in the local sweep folder or in the store."""
    import pyarrow.fs as pafs

    try:
        infos = store.filesystem.get_file_info(pafs.FileSelector(store.root, allow_not_found=True))
    except OSError as e:
        raise PathfmError(f"listing {store.uri} failed: {e}") from None
    names = {i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(TRIAL_PREFIX)}
    names |= SweepFolder(sweep_dir).ray_trial_names()
    return [FolderMirror(Path(sweep_dir) / n, store.child(n)) for n in sorted(names)]


def gather_trials(sweep_dir: Path, store: RemoteStorage) -> list[str]:
    """Before the driver collects: fetch the trial folders other nodes pushed (or pushed later than the local
    copy), without their checkpoints; returns the trial folder names fetched."""
    return [m.local.name for m in trial_mirrors(sweep_dir, store) if m.restore(skip_prefixes=(CHECKPOINTS_PREFIX,))]


def gather_trial(run_dir: Path, sweep_store: RemoteStorage) -> bool:
    """One trial's folder as :func:`gather_trials` fetches it, for the driver's end-of-trial record (a failed
    fetch is a warning: the record is then written from what this node holds); True when fetched."""
    mirror = FolderMirror(run_dir, sweep_store.child(Path(run_dir).name))
    try:
        return bool(mirror.restore(skip_prefixes=(CHECKPOINTS_PREFIX,)))
    except PathfmError as e:
        print(f"pathfm sweep: warning: {e}", file=sys.stderr, flush=True)
        return False


class SweepFilesMirror:
    """Driver-side, while the sweep runs: upload the sweep-level files (``sweep_spec.yaml``, ``sweep_meta.json``,
    Tune's experiment state and searcher state, reference rows) whenever they changed, checked at most every
    ``period_s`` seconds (:meth:`maybe_push`) or now (:meth:`push_now`, when a trial ends). A failed upload is
    a warning: the sweep goes on and the next check retries."""

    def __init__(self, sweep_dir: Path, store: RemoteStorage, period_s: float = 5.0):
        self.sweep_dir, self.store, self.period_s = Path(sweep_dir), store, period_s
        self.last_check = float("-inf")

    def maybe_push(self, now: float) -> list[str]:
        if 0 <= now - self.last_check < self.period_s:  # < 0: unpickled in a resumed sweep's process (another clock)
            return []
        return self.push_now(now)

    def push_now(self, now: float) -> list[str]:
        self.last_check = now
        if not self.sweep_dir.is_dir():
            return []
        mirror = FolderMirror(self.sweep_dir, self.store, skip_dirs=SweepFolder(self.sweep_dir).ray_trial_names())
        if mirror.locally_unchanged():
            return []
        try:
            return mirror.push()
        except PathfmError as e:
            print(f"pathfm sweep: warning: uploading the sweep's state: {e}", file=sys.stderr, flush=True)
            return []


def stage_from_store(uri: str) -> Path:
    """``pathfm sweep resume URI``: the staging folder of the sweep at ``uri``, with what the store holds and the
    folder lacks (a fresh machine after the driver's node was lost: all of it; the driver's own machine: files
    the folder already has are kept, being at least as new): the sweep-level files, and the trial folders
    without their checkpoints (a trial that resumes fetches its own)."""
    store = open_storage(uri)
    if read_stored_json(store, META_FILE) is None:
        raise PathfmError(f"{uri}: no sweep there (no {META_FILE} in the store); give the URI of the sweep "
                          "itself, <--storage URI>/<sweep name>")
    local = original_staging_dir(store)
    FolderMirror(local, store).pull(skip_prefixes=(TRIAL_PREFIX,), only_missing=True)
    gather_trials(local, store)
    record_mirror(local, store)
    return local


def set_aside_in_store(store: RemoteStorage, name: str, dest: str) -> None:
    """Move the folder ``name`` of the sweep in the store to ``dest`` (copied, then deleted), as the driver moved
    its local copy: a trial set aside as lost (``lost_trials/``) is then not gathered back as a trial. A failure
    is a warning naming what the store still holds."""
    import pyarrow.fs as pafs

    src, dst = store.child(name), store.child(dest)
    try:
        if store.filesystem.get_file_info(src.root).type != pafs.FileType.Directory:
            return
        pafs.copy_files(src.root, dst.root, source_filesystem=store.filesystem,
                        destination_filesystem=store.filesystem)
        store.filesystem.delete_dir(src.root)
    except OSError as e:
        print(f"pathfm sweep: warning: moving {src.uri} to {dst.uri} failed ({e}); the store still holds it as a "
              "trial folder, so a collection from the store counts it twice", file=sys.stderr, flush=True)


def original_staging_dir(store: RemoteStorage) -> Path:
    """The staging folder the sweep at ``store`` ran in (its ``staged_at.txt``; :func:`staging_dir` for a sweep
    that has none). A resumed sweep must run there again: Ray Tune's saved state holds that absolute path, and a
    trial Tune starts after the restore would write its Tune files under it (a different
    ``$PATHFM_SWEEP_STAGING`` on this machine does not move it)."""
    here = staging_dir(store)
    try:
        with store.filesystem.open_input_stream(store.child(STAGED_AT_FILE).root) as f:
            recorded = Path(f.read().decode().strip())
    except (OSError, UnicodeDecodeError):
        return here
    if recorded != here:
        print(f"pathfm sweep: staging {store.uri} in {recorded}, where its driver ran it (Ray Tune's state holds "
              f"that path), not in {here}", file=sys.stderr, flush=True)
    try:
        recorded.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PathfmError(f"{store.uri} ran in the staging folder {recorded}, and Ray Tune's saved state holds that "
                          f"path; it cannot be created here ({e}): resume on a machine where it can (the same user "
                          f"and $PATHFM_SWEEP_STAGING as the driver had)") from None
    return recorded


def mirror_sweep(sweep_dir: Path, store: RemoteStorage) -> list[str]:
    """The driver's upload: the sweep-level files (spec, meta, Tune state, results.parquet, reference rows)
    and what changed in the trial folders this node holds (each trial pushed its own already); returns the
    paths uploaded, relative to the sweep folder."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise PathfmError(f"{sweep_dir}: nothing to upload (no such folder)")
    trial_names = SweepFolder(sweep_dir).ray_trial_names()
    uploaded = [f"{m.local.name}/{rel}" for m in trial_mirrors(sweep_dir, store) if m.local.is_dir()
                for rel in m.push()]
    return uploaded + FolderMirror(sweep_dir, store, skip_dirs=trial_names).push()


def collect_from_store(uri: str, filesystem: Any = None) -> str:
    """``pathfm sweep collect URI``: fetch the sweep folder at ``uri`` into its staging folder (trial folders
    without their checkpoints), rebuild ``results.parquet`` from its trial folders, write it back to ``uri``;
    returns the URI of the results file."""
    import pyarrow.fs as pafs

    from pathfm.sweeps.collect import collect

    store = open_storage(uri, filesystem)
    info = store.filesystem.get_file_info(store.root)
    if info.type != pafs.FileType.Directory:
        raise PathfmError(f"{store.uri}: no sweep folder there ({info.type.name.lower()})")
    local = staging_dir(store)
    FolderMirror(local, store).pull(skip_prefixes=(TRIAL_PREFIX,))
    gather_trials(local, store)
    out = collect(local)
    try:
        upload_file(out, store.filesystem, store.child(RESULTS_FILE).root)
    except OSError as e:
        raise PathfmError(f"writing {RESULTS_FILE} to {store.uri} failed: {e}") from None
    return store.child(RESULTS_FILE).uri


def recorded_store(sweep_dir: Path) -> RemoteStorage | None:
    """The store a staged sweep folder is mirrored to (its ``mirror_uri.txt``), None for a local sweep."""
    note = SweepFolder(sweep_dir).mirror_note
    return open_storage(note.read_text().strip()) if note.is_file() else None
