"""`pathfm eval` sources from other libraries: ``hf:<dir>`` on a folder that `pathfm export` wrote (offline):
same features as the pathfm run, same evaluation rows. ``timm:<name>:<file>`` is checked on the timm export
in test_export.py (it needs a vit_small, built once there)."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from pathfm.errors import PathfmError
from pathfm.eval.sources import load_source
from pathfm.eval.evaluation import evaluate
from pathfm.eval.features import extract_features
from pathfm.eval.tasks import get_task
from pathfm.eval.tiles import load_samples
from pathfm.export.run import export_run
from test_export import VARIANTS, make_run


@pytest.fixture(scope="module")
def crc_crops():
    return load_samples(get_task("crc_crops")).images[::24]  # 18 crops of 112 px, all classes


def test_hf_dir_source_gives_the_runs_features_and_rows(tmp_path, crc_crops):
    pytest.importorskip("transformers", reason="hf:<dir> sources need pip install 'pathfm[hf]'")
    run_dir = make_run(tmp_path / "run", "vit_pico", VARIANTS["reg4"], grid=8, size=112)
    out = export_run(run_dir, "hf").out_dir
    ours, theirs = load_source(run_dir), load_source(f"hf:{out}")
    assert (theirs.mean, theirs.std, theirs.native_size) == ((0.5,) * 3, (0.5,) * 3, 112)
    a = extract_features(ours.model, crc_crops, device="cpu")
    b = extract_features(theirs.model, crc_crops, device="cpu")
    assert abs(a - b).max() <= 1e-5
    assert not torch.equal(next(theirs.random_init().model.parameters()), next(theirs.model.parameters()))
    kw = dict(tasks="crc", probes="knn", resize=112, baselines=False, cache_dir=None, output=None, progress=False,
              verbose=False)  # fmt: skip
    rows_ours, rows_hf = evaluate(run_dir, **kw), evaluate(f"hf:{out}", **kw)
    key = ["task", "probe", "fold", "metric"]
    assert rows_hf.select([*key, "value"]).sort(key).equals(rows_ours.select([*key, "value"]).sort(key))
    assert set(rows_hf["source"]) == {f"hf:{out}"}


def test_sources_that_are_not_there(tmp_path):
    with pytest.raises(PathfmError, match="no such weights file"):
        load_source(f"timm:vit_small_patch14_dinov2:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(PathfmError, match="no config.json"):
        load_source(f"hf:{tmp_path}")
