"""`pathfm analyze health`: the training-health figure from real runs' metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from pathfm.analysis.health import PANELS, plot_health, read_health
from pathfm.cli import main
from pathfm.config import load_config
from pathfm.errors import PathfmError
from pathfm.ssl.trainer import train

TINY = ["data.batch_size=4", "data.crops.n_local=2", "run.progress=false", "optim.steps=3", "optim.warmup_steps=1",
        "optim.teacher_temp_warmup_steps=1", "optim.freeze_last_layer_steps=1", "run.checkpoint_every=100"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    train(load_config("smoke", TINY), root / "ls")
    train(load_config("smoke", TINY + ["model.layerscale=null"]), root / "nols")
    return root / "ls", root / "nols"


def test_health_series_come_from_the_logged_diagnostics(two_runs):
    ls, nols = (read_health(r) for r in two_runs)
    assert ls["step"] == [1, 2, 3] and set(ls) == {"step", "ln_k", *(k for k, _ in PANELS)}
    # LayerScale 1e-5 at init: identical teacher CLS for every image, so exactly uniform targets
    assert ls["diag/teacher_cls_cosine"][0] > 0.9999
    assert ls["diag/dino_target_entropy"][0] == pytest.approx(ls["ln_k"][0], abs=1e-3)
    assert nols["diag/dino_target_entropy"][0] < nols["ln_k"][0] - 0.1
    # the plotted excess is the logged per-pair cross-entropy minus ln K
    record = json.loads((two_runs[0] / "metrics.jsonl").read_text().splitlines()[0])
    assert ls["dino_ce_excess"][0] == pytest.approx(record["diag/dino_ce_per_pair"] - record["diag/dino_ln_k"])


def test_health_cli_writes_the_figure_and_names_bad_inputs(two_runs, tmp_path):
    stem = tmp_path / "health"
    assert main(["analyze", "health", *map(str, two_runs), "--label", "ls", "--label", "no ls", "--out", str(stem)]) == 0
    png = stem.with_suffix(".png")
    assert png.stat().st_size > 20_000 and json.loads(stem.with_suffix(".json").read_text())["labels"] == ["ls", "no ls"]
    with pytest.raises(PathfmError, match="one per run"):
        plot_health(list(two_runs), tmp_path / "x", labels=["only one"])
    with pytest.raises(PathfmError, match="no metrics.jsonl"):
        read_health(tmp_path)
