"""Security: configs are read with a safe YAML loader, checkpoints never unpickle code, the local Ray starts no
dashboard (and the cluster template binds it to localhost), and no password reaches logs or metadata files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pathfm.config import REPO_ROOT, load_config, parse_overrides
from pathfm.errors import ConfigError, PathfmError
from pathfm.io import redact_url

TINY = ["data.batch_size=4", "data.crops.n_local=2", "run.progress=false", "optim.warmup_steps=1"]


def _evil_yaml(marker: Path) -> str:
    return f"!!python/object/apply:os.system ['touch {marker}']"


def test_python_yaml_tags_are_rejected_everywhere(tmp_path: Path):
    from pathfm.ablations.study import load_study
    from pathfm.sweeps.spec import load_spec

    marker = tmp_path / "pwned"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"seed: {_evil_yaml(marker)}\n")
    with pytest.raises(ConfigError, match="not valid YAML.*python/object/apply"):
        load_config(cfg)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: x\noverrides: {{seed: {_evil_yaml(marker)}}}\n")
    with pytest.raises(ConfigError, match="spec.yaml: not valid YAML"):
        load_spec(spec)
    study = tmp_path / "study.yaml"
    study.write_text(f"name: x\ndescription: {_evil_yaml(marker)}\n")
    with pytest.raises(ConfigError, match="study.yaml: not valid YAML"):
        load_study(study)
    with pytest.raises(ConfigError, match="override 'seed=.*not a valid YAML value"):
        parse_overrides([f"seed={_evil_yaml(marker)}"])
    assert not marker.exists()


class _Payload:
    """Pickles to a call that creates a file: loading it with a full unpickler would run code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _poisoned(path: Path, marker: Path, extra: dict) -> Path:
    from pathfm.io import sha256_file

    torch.save({**extra, "evil": _Payload(marker)}, path)
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")  # checksum is fine
    return path


def test_checkpoints_with_pickled_code_are_refused_and_never_run(tmp_path: Path):
    from pathfm.backbone import checkpoint as ckpt
    from pathfm.backbone.backbone_file import load_backbone
    from pathfm.ssl.trainer import train

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    ckpt.checkpoint_dir(run).mkdir(parents=True)
    bad = _poisoned(ckpt.checkpoint_path(run, 2), marker, {"format": "pathfm-checkpoint", "step": 2})
    with pytest.raises(ckpt.CheckpointError, match="unreadable checkpoint"):
        ckpt.load_checkpoint(bad)
    with pytest.warns(UserWarning, match="skipping checkpoint at step 2"):
        assert ckpt.latest_valid(run) is None
    cfg = load_config("smoke", TINY)
    with pytest.raises(PathfmError, match="no valid checkpoint"):
        train(cfg, run, resume=True)
    backbone = _poisoned(tmp_path / "teacher_backbone.pt", marker, {"format": "pathfm-backbone", "version": 1})
    with pytest.raises(PathfmError):
        load_backbone(backbone)
    with pytest.raises(ConfigError, match="model.init_from=.*not a loadable torch file"):
        train(load_config("smoke", TINY + [f"model.init_from={backbone}"]), tmp_path / "run2")
    assert not marker.exists()


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_ray_of_a_sweep_starts_no_dashboard():
    import ray

    from pathfm.sweeps.runner import connect

    assert connect(None, num_cpus=1, verbose=0)
    try:
        node = ray._private.worker.global_worker.node
        assert not node.address_info.get("webui_url")
        assert 8265 not in _listening_ports()
    finally:
        ray.shutdown()


def test_cluster_template_binds_the_dashboard_to_localhost():
    for path in (REPO_ROOT / "cluster").glob("*.y*ml"):
        text = path.read_text()
        hosts = re.findall(r"--dashboard-host[= ](\S+)", text)
        assert hosts, f"{path}: say where the dashboard binds (--dashboard-host=127.0.0.1)"
        assert set(hosts) <= {"127.0.0.1", "localhost"}, (path, hosts)


def test_redact_url():
    assert redact_url("postgresql://bob:s3cr3t@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert redact_url("mysql+pymysql://root:p@ss@host/db") == "mysql+pymysql://root:***@host/db"
    assert redact_url("ray://u:pw@head:10001") == "ray://u:***@head:10001"
    for plain in ("sqlite:///tmp/x.db", "ray://head:10001", "auto", "runs/sweeps"):
        assert redact_url(plain) == plain


def test_optuna_storage_password_never_reaches_logs_or_files(tmp_path: Path, capfd):
    """A PostgreSQL URL with a password (no server here: the storage is checked before the first trial and
    refused with one clear error): neither the error, nor the log, nor any file written shows the password;
    the error names the storage with the password masked."""
    from pathfm.errors import PathfmError
    from pathfm.sweeps.optuna_study import run_optuna_study
    from pathfm.sweeps.spec import spec_from_dict

    spec = spec_from_dict({
        "name": "secretive", "overrides": {"data.assume_mpp": 0.5, "optim.steps": 2},
        "space": {"kde_weight": {"uniform": [0.0, 0.1]}}, "search": {"algorithm": "optuna", "num_samples": 1},
        "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False},
    })
    url = "postgresql://optuna_user:hunter2secret@127.0.0.1:1/optuna"
    with pytest.raises(PathfmError) as e:  # no driver / no server
        run_optuna_study(spec, storage=url, root=tmp_path / "sweeps", n_trials=1)
    out = capfd.readouterr()
    assert "hunter2secret" not in out.out + out.err + str(e.value)
    assert "postgresql://optuna_user:***@127.0.0.1:1/optuna" in str(e.value)
    sweep_dir = tmp_path / "sweeps" / "secretive"
    for f in sweep_dir.rglob("*"):
        if f.is_file():
            assert b"hunter2secret" not in f.read_bytes(), f


def test_bundled_configs_and_examples_hold_no_credentials():
    secret = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]+:[^\s/@]+@")  # scheme://user:password@
    token = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*['\"]?[A-Za-z0-9/+_\-]{8,}")
    roots = ["pathfm/configs", "pathfm/ablations/studies", "sweeps", "cluster"]
    files = [p for r in roots for p in (REPO_ROOT / r).rglob("*") if p.suffix in (".yaml", ".yml")]
    assert files
    for p in files:
        text = p.read_text()
        assert not secret.search(text) and not token.search(text), p
