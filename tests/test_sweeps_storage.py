"""Safe Optuna storage: SQLite refused on network filesystems with several workers (sample mount tables), the
heartbeat grace above the measured pauses, and Optuna's file-locked JournalStorage on real files."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pathfm.errors import PathfmError
from pathfm.records import read_trial
from pathfm.sweeps.optuna_study import TRIAL_DIR_ATTR, fail_dead_trials, run_optuna_study
from pathfm.sweeps.spec import spec_from_dict
from pathfm.infra.optuna_storage import (
    check_storage,
    filesystem_type,
    heartbeat_grace,
    journal_path,
    journal_storage,
    longest_pause,
    parse_mounts,
    sqlite_path,
)

MOUNTS = """\
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
fileserver:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
10.0.0.5@o2ib:/scratch /lustre/scratch lustre rw,flock 0 0
//nas/lab\\040share /mnt/lab\\040share cifs rw,vers=3.0 0 0
/dev/sdb1 /home/alice/local ext4 rw 0 0
"""


def test_mount_table_lookup_takes_the_longest_mount_point():
    assert ("/mnt/lab share", "cifs") in parse_mounts(MOUNTS)
    assert filesystem_type("/home/bob/sweeps/optuna.db", MOUNTS) == ("nfs4", "/home")
    assert filesystem_type("/home/alice/local/s/optuna.db", MOUNTS) == ("ext4", "/home/alice/local")
    assert filesystem_type("/lustre/scratch/x/y.db", MOUNTS) == ("lustre", "/lustre/scratch")
    assert filesystem_type("/mnt/lab share/s.db", MOUNTS) == ("cifs", "/mnt/lab share")
    assert filesystem_type("/tmp/s.db", MOUNTS) == ("ext4", "/")
    assert filesystem_type("/homework/s.db", MOUNTS) == ("ext4", "/")  # a prefix of the string is not a parent
    assert filesystem_type(Path.cwd() / "x.db") is not None  # this machine's /proc/mounts


def test_sqlite_on_a_network_filesystem_is_refused_with_more_than_one_worker():
    url = "sqlite:////home/bob/sweeps/s1/optuna.db"
    assert sqlite_path(url) == Path("/home/bob/sweeps/s1/optuna.db")
    with pytest.raises(PathfmError, match=r"nfs4 network filesystem \(mounted at /home\) and 4 workers") as e:
        check_storage(url, 4, MOUNTS)
    fix = "--storage journal:////home/bob/sweeps/s1/optuna.journal"
    assert fix in str(e.value) and "postgresql://" in str(e.value) and "--workers 1" in str(e.value)
    assert journal_path(fix.split()[-1]) == Path("/home/bob/sweeps/s1/optuna.journal")
    with pytest.raises(PathfmError, match="lustre"):
        check_storage("sqlite:////lustre/scratch/s.db", 2, MOUNTS)
    check_storage(url, 1, MOUNTS)  # one writer: SQLite is fine anywhere
    check_storage("sqlite:////home/alice/local/s.db", 8, MOUNTS)  # a local disk below an NFS home
    check_storage("postgresql://u@db/optuna", 8, MOUNTS)
    check_storage("journal:////home/bob/s.journal", 8, MOUNTS)


def test_heartbeat_grace_stays_above_the_longest_measured_pause():
    assert heartbeat_grace(60, None) == 120
    assert heartbeat_grace(60, 30.0) == 120  # 1.5 x 30 + 60 = 105 < 120
    assert heartbeat_grace(60, 300.0) == 510  # a 5-minute evaluation: 1.5 x 300 + 60
    infos = [{"wall_time_s": 100.0, "train_time_s": 40.0}, {"wall_time_s": 50.0, "train_time_s": 45.0},
             {"status": "RUNNING"}]
    assert longest_pause(infos) == 60.0 and longest_pause([{}]) is None


def test_a_journal_trial_whose_folder_goes_quiet_is_failed_and_queued_for_retry(tmp_path: Path):
    storage = journal_storage(tmp_path / "study.journal")
    study = optuna.create_study(study_name="quiet", storage=storage)
    trial = study.ask()
    trial.set_user_attr(TRIAL_DIR_ATTR, "optuna_00000")
    folder = tmp_path / "optuna_00000"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("{}\n")
    fail_dead_trials(study, storage, tmp_path, grace_s=60, max_retry=1)  # written just now: alive
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    old = time.time() - 120
    import os

    os.utime(folder / "metrics.jsonl", (old, old))
    fail_dead_trials(study, storage, tmp_path, grace_s=60, max_retry=1)
    reloaded = optuna.load_study(study_name="quiet", storage=journal_storage(tmp_path / "study.journal"))
    assert [t.state for t in reloaded.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert reloaded.trials[1].user_attrs[TRIAL_DIR_ATTR] == "optuna_00000"  # the retry resumes in that folder


def _optimize_on_journal(path: str, n: int) -> None:
    """One worker process: ``n`` quick trials on the shared journal file."""
    study = optuna.load_study(study_name="shared", storage=journal_storage(Path(path)))
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=n)


@pytest.mark.timeout(120)
def test_two_processes_write_one_file_locked_journal_without_losing_a_trial(tmp_path: Path):
    import multiprocessing as mp

    journal = tmp_path / "shared" / "study.journal"
    optuna.create_study(study_name="shared", storage=journal_storage(journal))
    ctx = mp.get_context("fork")  # two real processes; fork spares them re-importing optuna
    procs = [ctx.Process(target=_optimize_on_journal, args=(str(journal), 25)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=journal_storage(journal))
    assert len(study.trials) == 50 and {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert sorted(t.number for t in study.trials) == list(range(50))  # no number given twice
    assert not (journal.parent / (journal.name + ".lock")).exists()  # every lock was released


@pytest.mark.slow  # ~18 s in a fresh process (imports); the trial itself is 2 steps
@pytest.mark.timeout(300)
def test_pathfm_sweep_optuna_runs_on_a_journal(tmp_path: Path):
    spec = spec_from_dict({
        "name": "journal1", "space": {"kde_weight": {"choice": [0.05]}},
        "overrides": {"data.assume_mpp": 0.5, "optim.steps": 2, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
                      "data.batch_size": 2, "data.crops.n_local": 1, "data.n_slides": 1,
                      "data.tissue.thumbnail_size": 256},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
        "search": {"algorithm": "optuna", "num_samples": 1, "seed": 0},
    })
    journal = tmp_path / "shared" / "journal1.journal"
    sweep_dir = run_optuna_study(spec, storage=f"journal:///{journal}", root=tmp_path / "sweeps")
    (trial,) = optuna.load_study(study_name="journal1", storage=journal_storage(journal)).trials
    assert trial.state == TrialState.COMPLETE and read_trial(sweep_dir / trial.user_attrs[TRIAL_DIR_ATTR])["status"] == "TERMINATED"
    assert not (sweep_dir / "optuna.db").exists()
