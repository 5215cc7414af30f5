"""What a user trips over: python -m pathfm, 'did you mean' hints, tidy tables in `pathfm analyze`,
the Optuna dashboard command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from ports import free_port
from pathfm.cli import main
from pathfm.config import REPO_ROOT, load_config
from pathfm.errors import ConfigError, PathfmError


@pytest.mark.timeout(120)
def test_python_dash_m_pathfm_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pathfm", "--version"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("pathfm ")


def test_did_you_mean_lists_each_suggestion_once():
    with pytest.raises(ConfigError, match=r"did you mean kde_weight, koleo_weight\?$"):
        load_config("smoke", ["kde_weigth=0.1"])


def test_analyze_a_tidy_table_skips_filters_on_absent_columns(tmp_path, capsys):
    rows = ["arm,seed,task,metric,value"] + [
        f"{arm},{seed},{task},balanced_accuracy,{0.6 + 0.05 * (arm == 'kde') + 0.01 * seed:.3f}"
        for arm in ("base", "kde") for seed in range(3) for task in ("crc", "osteo")]
    (tmp_path / "tidy.csv").write_text("\n".join(rows) + "\n")
    assert main(["analyze", "table", str(tmp_path / "tidy.csv"), "--baseline", "base"]) == 0
    out, err = capsys.readouterr()
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert sorted(notes) == [f"note: {tmp_path / 'tidy.csv'} has no '{c}' column; the filter {c} == '{v}' is skipped"
                             for c, v in (("backbone", "trained"), ("kind", "eval"), ("probe", "linear"))]
    kde = next(line for line in out.splitlines() if line.startswith("| kde"))
    assert "+0.050" in kde and "Untrained-network" not in out


@pytest.mark.slow  # an SQLite Optuna study and a server in a subprocess: ~20 s on the shared 2 cores
@pytest.mark.timeout(300)
def test_dashboard_serves_the_study_of_a_sweep_folder(tmp_path):
    pytest.importorskip("optuna_dashboard")
    import optuna

    from pathfm.infra.dashboard import storage_url

    with pytest.raises(PathfmError, match="no optuna.db"):
        storage_url(tmp_path)
    study = optuna.create_study(study_name="kde-sweep", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert storage_url(tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pathfm", "sweep", "dashboard", str(tmp_path), "--port", str(port)],
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.2)
        assert [s["study_name"] for s in studies] == ["kde-sweep"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
