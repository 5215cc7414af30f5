"""Which folders of an object-store sweep are kept in sync with the store, from where and when.

Every trial keeps its folder in sync with the store from the node it runs on (as Ray Tune uploads a trial's
checkpoints from its node), so a multi-node cluster needs no shared folder for single-process trials
(``resources.workers > 1`` DDP trials do not sync from their nodes yet): :func:`synced_trial` restores the
trial folder when the trial starts and pushes it after every checkpoint the trainer writes (trainer callback
``on_checkpoint``) and when the trial ends, however it ends. Such trials report no Ray checkpoints
(:func:`pathfm.sweeps.tune_entry.metrics_only`): the trial folder in the store is what a restarted trial
resumes from. The transfers themselves are :class:`pathfm.infra.folder_mirror.FolderMirror`.

The driver uploads the sweep-level files (spec, meta, Tune's experiment and searcher state) whenever they
change while the sweep runs (:class:`SweepFilesMirror`, checked every few seconds and when a trial ends), so a
lost driver node loses no more of the Tune state than Tune's own snapshot period: ``pathfm sweep resume URI``
continues the sweep from the store on another machine (:func:`stage_from_store`). It keeps its end-of-sweep
upload (:func:`mirror_sweep`: the sweep-level files, ``results.parquet`` and whatever changed in the trial
folders it holds) and fetches the trial folders other nodes pushed, without their checkpoints, before it
records a trial's end (:func:`gather_trial`) and before it collects ``results.parquet`` (:func:`gather_trials`);
``pathfm sweep collect URI`` does the same (:func:`pathfm.sweeps.collect.collect_from_store`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pathfm.errors import PathfmError
from pathfm.infra.folder_mirror import CHECKPOINTS_PREFIX, FolderMirror, read_stored_json
from pathfm.infra.object_store import RemoteStorage, open_storage, record_mirror, staging_dir
from pathfm.records import SweepFolder
from pathfm.records.sweep_folder import META_FILE, STAGED_AT_FILE, TRIAL_PREFIX


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


def recorded_store(sweep_dir: Path) -> RemoteStorage | None:
    """The store a staged sweep folder is mirrored to (its ``mirror_uri.txt``), None for a local sweep."""
    note = SweepFolder(sweep_dir).mirror_note
    return open_storage(note.read_text().strip()) if note.is_file() else None
