"""Shared fixtures. Tests use the real components: real openslide on the bundled slides, a real local
Ray, real SQLite for Optuna. Environment for Ray/matplotlib is fixed here, before anything imports them."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("XFORMERS_DISABLED", "1")
# Ray starts its workers at niceness 15 (its worker_niceness default): on a busy CI machine a trial then gets a few
# per cent of a core beside any process at niceness 0 and runs past its test's timeout. Tests run the trials at
# the priority of pytest itself, inherited by every Ray started here or in a subprocess.
os.environ.setdefault("RAY_worker_niceness", "0")

import pytest  # noqa: E402

from pathfm.config import REPO_ROOT, SAMPLES_DIR  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def wsi_dir(samples: Path) -> Path:
    return samples / "wsi"


@pytest.fixture(scope="session")
def cmu_slide(wsi_dir: Path) -> Path:
    """Aperio, 1 level, mpp 0.499."""
    return wsi_dir / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def tcga_slide(wsi_dir: Path) -> Path:
    """Aperio, 2 levels, no mpp metadata."""
    return wsi_dir / "TCGA-CR-7395-01A-01-TS1.svs"


@pytest.fixture(scope="session")
def pyramid_slide(wsi_dir: Path) -> Path:
    """Generic tiled TIFF, 3 levels, mpp 0.499."""
    return wsi_dir / "CMU-1-Small-Region.generic-tiled-pyramid.tiff"


@pytest.fixture(scope="session")
def bad_tiff(samples: Path) -> Path:
    """A strip TIFF that openslide cannot open."""
    return samples / "bad_inputs" / "kidney-48-5.tif"


@pytest.fixture(scope="session")
def make_pico_run(tmp_path_factory):
    """``make_pico_run(name, step) -> run dir`` holding an exported pico teacher (seed 0, the `smoke`
    config) and its config.yaml."""

    def make(name: str, step: int) -> Path:
        import torch

        from pathfm.backbone.backbone_file import export_backbone
        from pathfm.backbone.vit import build_backbone
        from pathfm.config import load_config

        run = tmp_path_factory.mktemp(name)
        cfg = load_config("smoke")
        torch.manual_seed(0)
        export_backbone(build_backbone(cfg.model), run / "teacher_backbone.pt", step=step, model_cfg=cfg.model)
        (run / "config.yaml").write_text(cfg.to_yaml())
        return run

    return make


@pytest.fixture(scope="session")
def demo_output(repo_root: Path, tmp_path_factory) -> Path:
    """The README's main job (scripts/demo.sh) at its smallest size, run once per session as a user runs it:
    its output folder holds the `photometric` study (cpu scale, 2 seeds, 4 steps) and its reports (report-knn,
    report-linear)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo") / "demo"
    env = dict(os.environ, PATHFM_DEMO_SIZE="tiny", PATHFM_DEMO_DIR=str(out), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(repo_root / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (out.parent / "demo.log").write_text(proc.stdout + proc.stderr)  # what the user saw (tests/test_main_job.py)
    return out


@pytest.fixture
def nan_dino_head_from_call():
    """``with nan_dino_head_from_call(n):`` the student's DINO head outputs NaN from its n-th call on
    (a global forward hook on the real module, not a mock)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def hooked(n: int):
        calls = [0]

        def hook(module, inputs, output):
            if type(module).__name__ != "DINOHead" or not torch.is_grad_enabled():
                return None
            calls[0] += 1
            return output * float("nan") if calls[0] >= n else None

        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    return hooked
