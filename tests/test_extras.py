"""pathfm installed without its optional extras, and with each extra alone (pyproject's
[project.optional-dependencies]): `pathfm --help`, a smoke training run and its evaluation work on the core
dependencies alone, and every pathfm module imports with any one extra. Simulated in this environment (which
has every extra) by a child whose imports of anything that installation would lack fail, as they would there
(tests/extras_isolation.py reads that from the packages' metadata)."""

from __future__ import annotations

import importlib.util
import tomllib

import pytest
from extras_isolation import blocked_modules, installed_closure, run_with_extras

from pathfm.config import REPO_ROOT

EXTRAS = sorted(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
FEATURE_MODULES = {  # what each extra exists for: importable with that extra alone
    "gpu": ["xformers"], "client": ["grpc"], "remote": ["tiffslide", "fsspec"], "dicom": ["wsidicom"],
    "mlflow": ["mlflow"], "wandb": ["wandb"], "dashboard": ["optuna_dashboard"], "hf": ["transformers", "safetensors"],
    "eva": ["eva"], "stain": ["torchstain"],
}
# modules that subclass an extra's own classes (eva loads its dataset class by name): with their extra only
NEEDS_ITS_EXTRA = {"pathfm.eva.tile_dataset": "eva"}


def import_all(extras: set[str]) -> str:
    """Child code importing every pathfm module (but those needing an extra not installed) and printing the
    failures."""
    skip = sorted(m for m, e in NEEDS_ITS_EXTRA.items() if e not in extras)
    return f"""
import importlib, pkgutil, pathfm
failed = []
for m in pkgutil.walk_packages(pathfm.__path__, "pathfm."):
    if m.name in {skip!r}:
        continue
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed.append(f"{{m.name}}: {{e!r}}")
print("FAILED", failed)
"""


def test_the_isolation_blocks_what_an_installation_would_lack():
    core = blocked_modules(set())
    assert {"mlflow", "wandb", "transformers", "eva", "torchstain", "tiffslide", "wsidicom"} <= core
    assert not {"torch", "timm", "ray", "optuna", "openslide", "polars", "cv2", "yaml"} & core
    assert "transformers" not in blocked_modules({"hf"}) and "mlflow" in blocked_modules({"hf"})
    assert "ray" in installed_closure(set()) and "torch" in installed_closure(set())


def test_every_extra_is_named_here():
    assert sorted(FEATURE_MODULES) == [e for e in EXTRAS if e != "test"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_core_alone_runs_help_a_smoke_training_run_and_its_evaluation(tmp_path):
    run = tmp_path / "run"
    code = f"""
import contextlib, io
from pathfm.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
assert "train" in out.getvalue() and "sweep" in out.getvalue()
assert main(["train", "smoke", "optim.steps=2", "data.batch_size=2", "data.crops.n_local=2", "run.progress=false",
             "--run-dir", {str(run)!r}]) == 0
assert main(["eval", {str(run)!r}, "--task", "crc", "--probe", "knn", "--no-baselines", "--no-progress"]) == 0
{import_all(set())}
"""
    res = run_with_extras(set(), code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "FAILED []" in res.stdout, res.stdout[-3000:]
    assert (run / "eval.parquet").exists() and (run / "DONE").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("extra", sorted(FEATURE_MODULES))
def test_each_extra_alone_imports_and_so_does_every_pathfm_module(extra, tmp_path):
    if any(importlib.util.find_spec(m) is None for m in FEATURE_MODULES[extra]):
        pytest.skip(f"the {extra} extra is not installed here (the gpu extra: on a GPU machine)")
    modules = FEATURE_MODULES[extra]
    res = run_with_extras({extra}, "\n".join(f"import {m}" for m in modules) + import_all({extra}), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "FAILED []" in res.stdout, res.stdout[-3000:]
