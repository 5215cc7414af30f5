"""Expected failures end in one clear line naming the file or value and the fix, printed by the CLI without a
traceback (issue 25, "Tracebacks for expected failures"). Real files, real SQLite, real training; fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pathfm.cli import main
from pathfm.config import load_config
from pathfm.errors import ConfigError, NonFiniteLossError, PathfmError


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with a message and no traceback. Returns stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("override, field", [
    ("optim.base_lr=.inf", "optim.base_lr"),
    ("loss.kde_weight=.nan", "loss.kde_weight"),
    ("optim.betas=[0.9, -.inf]", "optim.betas.1"),
    ("run.guards={max_loss_ratio: .inf}", "run.guards.max_loss_ratio"),
])
def test_a_non_finite_config_value_is_refused_at_load_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"{field}: .*finite"):
        load_config("smoke", [override])


def test_a_non_finite_value_in_a_config_file_is_refused_by_the_cli(tmp_path, capsys):
    path = tmp_path / "lr.yaml"
    path.write_text("base: smoke\noptim:\n  base_lr: .inf\n")
    err = _cli_error(capsys, ["train", str(path), "--dry-run"])
    assert "optim.base_lr" in err and "finite" in err


def test_non_finite_loss_is_a_pathfm_error_printed_as_one_line(tmp_path, capsys, nan_dino_head_from_call):
    assert issubclass(NonFiniteLossError, PathfmError) and issubclass(NonFiniteLossError, RuntimeError)
    argv = ["train", "smoke", "data.batch_size=2", "data.crops.n_local=2", "run.progress=false", "optim.steps=2",
            "optim.warmup_steps=1", "data.n_slides=1", "--run-dir", str(tmp_path / "run")]
    with nan_dino_head_from_call(1):
        err = _cli_error(capsys, argv)
    assert "pathfm train: error: loss/dino_" in err and "is nan at step 1" in err and "resume" in err


# ------------------------------------------------------------------------------------ config files
def test_a_config_path_that_is_a_folder_is_named_with_the_fix(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "mine.yaml").write_text("base: smoke\n")
    with pytest.raises(ConfigError, match=r"configs is a folder, not a YAML file; give a file in it \(mine\.yaml\)"):
        load_config(folder)
    (tmp_path / "dir.yaml").mkdir()  # a folder that even looks like a YAML file
    err = _cli_error(capsys, ["train", str(tmp_path / "dir.yaml"), "--dry-run"])
    assert "dir.yaml is a folder, not a YAML file" in err


def test_a_config_of_many_unknown_keys_gives_a_short_error(tmp_path):
    n = 5000
    path = tmp_path / "junk.yaml"
    path.write_text("".join(f"unknown_key_{i:05d}: {'x' * 200}\n" for i in range(n)))  # ~1 MB
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert len(msg) < 4000, len(msg)
    assert "unknown_key_00000" in msg and "unknown_key_00019" in msg and "unknown_key_00020" not in msg
    assert f"and {n - 20} more" in msg


# ------------------------------------------------------------------------------------ Optuna storage
def _optuna_spec(tmp_path: Path) -> Path:
    spec = {"name": "st", "overrides": {"optim.steps": 2}, "space": {"kde_weight": {"choice": [0.0, 0.1]}},
            "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
            "search": {"algorithm": "optuna", "num_samples": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_corrupt_sqlite_storage_is_named_before_any_trial(tmp_path, capsys):
    bad = tmp_path / "study.db"
    bad.write_bytes(np.random.default_rng(0).bytes(20_000))  # a damaged database file: random bytes
    argv = ["sweep", "optuna", str(_optuna_spec(tmp_path)), "--storage", f"sqlite:///{bad}", "--dir", str(tmp_path / "sw")]
    err = _cli_error(capsys, argv)
    assert f"{bad} is not a SQLite database" in err and "move it aside" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "sw").glob("st/optuna_*"))  # no trial ran


def test_a_damaged_optuna_journal_is_named_and_left_as_it_was(tmp_path, capsys):
    cut = tmp_path / "cut.journal"  # a writer killed mid-line; Optuna would append its next record to that line
    cut.write_text('{"op_code": 0, "worker_id": "w", "study_name": "st", "directions": [1]}\n{"op_code": 4, "wor')
    noise = tmp_path / "noise.journal"
    noise.write_bytes(np.random.default_rng(1).bytes(5_000) + b"\n")
    for journal in (cut, noise):
        before = journal.read_bytes()
        argv = ["sweep", "optuna", str(_optuna_spec(tmp_path)), "--storage", f"journal:///{journal}",
                "--dir", str(tmp_path / "sw")]
        err = _cli_error(capsys, argv)
        assert f"{journal} is not an Optuna journal" in err and len(err.strip().splitlines()) == 1, err
        assert journal.read_bytes() == before


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_unwritable_storage_location_is_named_before_any_trial(tmp_path, capsys, where):
    # Tests run as root, for whom chmod stops no write; a read-only location that refuses root too: a path
    # below a regular file (a folder that cannot be created), or /proc (a file system that takes no new files).
    if where == "under_a_file":
        (tmp_path / "a-file").write_text("x")
        db = tmp_path / "a-file" / "study.db"
    else:
        db = Path("/proc/pathfm-no-such-folder/study.db")
    for url in (f"sqlite:///{db}", f"journal:///{db.with_suffix('.journal')}"):
        argv = ["sweep", "optuna", str(_optuna_spec(tmp_path)), "--storage", url, "--dir", str(tmp_path / "sw")]
        err = _cli_error(capsys, argv)
        assert "cannot be created or written" in err and "give a path in a folder you can write to" in err, err
        assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ slide-inspection cache
def test_a_damaged_inspection_cache_entry_is_recomputed_and_rewritten(tmp_path, cmu_slide, caplog):
    import shutil

    from pathfm.data.hsv import HSVFilter
    from pathfm.data.inspection_cache import InspectionCache, default_cache_dir
    from pathfm.data.manifest import load_manifest
    from pathfm.data.patching import build_sources

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu_slide, folder / cmu_slide.name)
    d = load_config("smoke").data
    entries, hsv = load_manifest(folder), HSVFilter.from_config(d.tissue)

    def sources():
        cache = InspectionCache(default_cache_dir(folder))
        return cache, build_sources(entries, d.mpps, hsv, 256, None, cache=cache)

    _, first = sources()
    [entry] = list((folder / ".pathfm-cache").glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:300])  # cut off mid-file (a full disk, a killed copy): BadZipFile
    with caplog.at_level("WARNING", logger="pathfm.data"):
        cache, again = sources()
    assert cache.hits == 0 and again[0].geometry == first[0].geometry
    assert any(entry.name in r.getMessage() and "recomputed" in r.getMessage() for r in caplog.records)
    cache, _ = sources()  # the entry was written anew, whole
    assert cache.hits == 1 and not list((folder / ".pathfm-cache").glob(".*.tmp"))
