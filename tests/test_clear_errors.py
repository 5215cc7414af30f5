"""Expected failures end in one clear line naming the file or value and the fix, printed by the CLI without a
traceback (issue 25, "Tracebacks for expected failures"). Real files, real SQLite, real training; fast."""

from __future__ import annotations

import json
import subprocess
import sys
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
    argv = ["sweep", "optuna", str(_optuna_spec(tmp_path)), "--storage", f"sqlite:///{bad}",
            "--dir", str(tmp_path / "sw")]
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


# ------------------------------------------------------------------------------------ files that are not what they say
def test_a_manifest_or_results_file_that_is_not_parquet_is_named_with_the_fix(tmp_path, capsys):
    from pathfm.data.manifest import load_manifest
    from pathfm.results import append_results, eval_frame

    manifest = tmp_path / "slides.parquet"
    manifest.write_text("path,mpp\nslide.svs,0.5\n")  # a CSV saved under a .parquet name
    with pytest.raises(PathfmError, match=r"slides\.parquet: not readable as a Parquet manifest \(.*\); "
                                          r"save it as Parquet .* or as \.csv"):
        load_manifest(manifest)
    results = tmp_path / "eval.parquet"
    results.write_bytes(b"PAR1 but cut off")
    with pytest.raises(PathfmError, match=r"eval\.parquet: not readable as a Parquet results file .*move it aside"):
        append_results(results, eval_frame([]))
    assert results.read_bytes() == b"PAR1 but cut off"
    err = _cli_error(capsys, ["data", "scan", str(manifest), "--out", str(tmp_path / "out.csv")])
    assert "slides.parquet: not readable as a Parquet manifest" in err and len(err.strip().splitlines()) == 1


def _sweep_folder(tmp_path: Path) -> Path:
    """A sweep folder as `pathfm sweep run` leaves it, with 30 finished trials (no Ray needed)."""
    from pathfm.io import append_jsonl, atomic_write_json
    from pathfm.sweeps.spec import expand_trials, spec_from_dict

    sweep = tmp_path / "sw"
    spec = spec_from_dict({"name": "sw", "space": {"kde_weight": {"choice": [0.0, 0.1]}}, "eval": {"enabled": False}})
    sweep.mkdir()
    (sweep / "sweep_spec.yaml").write_text(spec.to_yaml())
    atomic_write_json(sweep / "trials.json", expand_trials(spec, validate=False))
    for i in range(30):
        d = sweep / f"trial_x_{i:05d}"
        for s in range(20):
            append_jsonl(d / "metrics.jsonl", {"step": s, "loss": 2.0 + i, "time_s": 1.0, "lr": 0.1 * s})
        atomic_write_json(d / "trial.json", {"trial_id": f"x_{i:05d}", "index": i, "params": {"kde_weight": 0.0},
                                             "status": "TERMINATED"})
    return sweep


def test_a_truncated_trials_json_on_sweep_resume_is_named_with_the_fix(tmp_path, capsys):
    sweep = _sweep_folder(tmp_path)
    from pathfm.sweeps.runner import sweep_trials
    from pathfm.sweeps.spec import load_spec

    trials = sweep / "trials.json"
    expected = trials.read_text()
    trials.write_text(expected[:40])  # cut off mid-write
    for argv in (["sweep", "resume", str(sweep)], ["sweep", "reference", str(sweep)]):
        err = _cli_error(capsys, argv)
        assert f"{trials}: not readable as JSON" in err and "move it aside" in err and "sweep_spec.yaml" in err
        assert len(err.strip().splitlines()) == 1
    trials.rename(sweep / "trials.json.damaged")  # the fix: moved aside, resume rebuilds it from the spec
    assert sweep_trials(sweep, load_spec(sweep / "sweep_spec.yaml")) == json.loads(expected)
    assert trials.read_text() == expected


@pytest.mark.timeout(120)
def test_sweep_collect_on_a_full_disk_says_so_and_keeps_the_previous_results(tmp_path):
    from pathfm.sweeps.collect import collect

    sweep = _sweep_folder(tmp_path)
    previous = collect(sweep).read_bytes()
    assert len(previous) > 4096
    # A full disk: the process may not grow any file past 4 KiB (RLIMIT_FSIZE; SIGXFSZ ignored, so the write
    # fails with EFBIG as it would with ENOSPC), in a child process so that pytest's own files are not limited.
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY)); "
            "from pathfm.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "sweep", "collect", str(sweep)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{sweep / 'results.parquet'}: writing the sweep results failed" in proc.stderr
    assert "the previous file is unchanged" in proc.stderr and "free space" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (sweep / "results.parquet").read_bytes() == previous
    assert not list(sweep.glob(".results.parquet.*"))  # no temporary file left behind


# ------------------------------------------------------------------------------ extra trial callbacks
def test_trial_callbacks_named_in_the_environment_are_loaded_or_named_with_the_fix(tmp_path, monkeypatch):
    from fault_injection import ENV_VAR, FaultInjector, fault_environment

    from pathfm.sweeps.trainable import TRIAL_CALLBACKS_ENV, extra_trial_callbacks

    trial = {"params": {"kde_weight": 0.01}, "arm": None, "seed": 0, "index": 0}
    assert extra_trial_callbacks(trial, tmp_path, environ={}) == []
    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"when": {"kde_weight": 0.01}, "at_step": 2}]))
    env = fault_environment(rules)
    assert env[TRIAL_CALLBACKS_ENV] == "fault_injection:fault_callbacks"
    monkeypatch.setenv(ENV_VAR, str(rules))  # the loaded function reads its rules from the environment
    (injector,) = extra_trial_callbacks(trial, tmp_path, environ=env)
    assert isinstance(injector, FaultInjector) and injector.rule.at_step == 2
    for entry in ("no_such_module_xyz:make", "fault_injection:no_such_function", "fault_injection"):
        with pytest.raises(PathfmError, match=rf"{TRIAL_CALLBACKS_ENV}: cannot load '{entry}'.*module:function"):
            extra_trial_callbacks(trial, tmp_path, environ={TRIAL_CALLBACKS_ENV: entry})
