"""Evaluation with kaiko's eva: the generated config, eva's results as pathfm rows, and eva's own offline
linear-probe pipeline end to end on the bundled CRC tiles (needs pip install 'pathfm[eva]')."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pathfm.errors import ConfigError
from pathfm.eva.config import EVA_TASKS, eva_config
from pathfm.eva.results import eva_rows, metric_name


def test_eva_task_config_follows_eva_protocol(make_pico_run, tmp_path):
    run = make_pico_run("eva_cfg", 3)
    root = tmp_path / "crc"
    with pytest.raises(ConfigError, match=r"lacks NCT-CRC-HE-100K, CRC-VAL-HE-7K"):
        eva_config(str(run), "crc", out_dir=tmp_path / "o", data_root=root)
    for d in EVA_TASKS["crc"].expected:
        (root / d).mkdir(parents=True)
    cfg = eva_config(str(run), "crc", out_dir=tmp_path / "o", data_root=root)
    head = cfg["model"]["init_args"]
    assert head["head"]["init_args"] == {"in_features": 2 * 96, "out_features": 9}  # pico: D=96, cls+mean
    assert head["criterion"] == "torch.nn.functional.cross_entropy"
    assert head["optimizer"]["init_args"] == {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}
    predict = cfg["data"]["init_args"]["datasets"]["predict"]
    assert [p["init_args"]["split"] for p in predict] == ["train", "val"]
    assert {p["class_path"] for p in predict} == {"eva.vision.datasets.CRC"}
    assert predict[0]["init_args"]["transforms"]["init_args"] == {"mean": [0.5] * 3, "std": [0.5] * 3, "size": 224}
    writer = cfg["trainer"]["init_args"]["callbacks"][-1]["init_args"]
    assert writer["backbone"]["init_args"] == {"path": "pathfm.eva.backbone.eva_backbone",
                                                "arguments": {"source": str(run), "pooling": "cls+mean"}}

    (tmp_path / "pcam").mkdir()
    for f in EVA_TASKS["patch_camelyon"].expected:
        (tmp_path / "pcam" / f).touch()
    binary = eva_config(str(run), "patch_camelyon", out_dir=tmp_path / "p", data_root=tmp_path / "pcam", pooling="cls")
    assert binary["model"]["init_args"]["head"]["init_args"] == {"in_features": 96, "out_features": 1}
    assert binary["model"]["init_args"]["criterion"] == "torch.nn.functional.binary_cross_entropy_with_logits"
    assert set(binary["data"]["init_args"]["datasets"]) == {"train", "val", "test", "predict"}
    with pytest.raises(ConfigError, match="not one of bach, crc, mhist, patch_camelyon or pathfm:<task>"):
        eva_config(str(run), "kather", out_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="give --data-root"):
        eva_config(str(run), "bach", out_dir=tmp_path / "x")


def test_eva_results_become_pathfm_rows(tmp_path):
    # the layout eva 0.4.5 writes (one dict per validation dataset; each metric's value per head run)
    res = {"metrics": {"val": [{"val/AverageLoss": {"mean": 1.0, "stdev": 0.0, "values": [1.0, 1.0]},
                                "val/MulticlassAccuracy": {"mean": 0.5, "stdev": 0.1, "values": [0.4, 0.6]},
                                "val/MulticlassF1Score": {"mean": 0.3, "stdev": 0.0, "values": [0.3, 0.3]}}],
                       "test": []}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    rows = eva_rows(path, source="runs/x", backbone="trained", task="crc", step=7)
    got = {(r["metric"], r["fold"]): r["value"] for r in rows}
    assert got == {("balanced_accuracy", 0): 0.4, ("balanced_accuracy", 1): 0.6, ("macro_f1", 0): 0.3,
                   ("macro_f1", 1): 0.3}
    assert {(r["task"], r["probe"], r["step"]) for r in rows} == {("eva:crc", "eva_linear", 7)}
    assert metric_name("test/BinaryBalancedAccuracy") == "balanced_accuracy"
    assert metric_name("val/MulticlassPrecision") == "multiclass_precision"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1-2 min on an idle 2-core machine; 10+ min when it is shared
def test_eva_pipeline_on_bundled_crc_matches_pathfm(make_pico_run, tmp_path, capsys):
    """eva's own predict_fit on pathfm's crc fold 0: eva's embeddings are pathfm's features, eva's reported
    balanced accuracy is pathfm's metric on eva's head, and the rows land in the run's eval.parquet."""
    pytest.importorskip("eva", reason="the eva test needs pip install 'pathfm[eva]'")
    import polars as pl
    import torch

    from pathfm.cli import main
    from pathfm.eva.agreement import compare_with_pathfm
    from pathfm.eva.results import read_eva_embeddings
    from pathfm.eval.metrics import classification_metrics

    run = make_pico_run("eva_e2e", 5)
    out = tmp_path / "eva"
    assert main(["eva", "run", str(run), "--task", "pathfm:crc", "--out", str(out), "--n-runs", "1",
                 "--max-steps", "300"]) == 0
    err = capsys.readouterr().err  # eva's minute of start-up is not silent: a heartbeat line every 15 s
    assert re.search(r"^eva predict_fit: \d+ s, last output: ", err, re.M), err[-2000:]
    results = next(out.rglob("results.json"))
    cmp = compare_with_pathfm(out, results, source=str(run), task="crc")
    assert cmp["feature_max_abs_diff"] <= 1e-5, cmp  # eva's embeddings are pathfm's features
    assert (cmp["n_train"], cmp["n_val"]) == (86, 22)

    # eva's number is pathfm's balanced accuracy of eva's own (best) head on the validation embeddings
    ckpt = torch.load(next(out.rglob("best.ckpt")), map_location="cpu", weights_only=False)
    x_val, y_val, _ = read_eva_embeddings(out / "embeddings")["val"]
    w, b = ckpt["state_dict"]["head.weight"], ckpt["state_dict"]["head.bias"]
    pred = (torch.from_numpy(x_val) @ w.T + b).argmax(1).numpy()
    ours = classification_metrics(y_val, pred, 8)["balanced_accuracy"]
    assert abs(ours - cmp["eva_balanced_accuracy"]) <= 1e-6, (ours, cmp)
    assert cmp["eva_balanced_accuracy"] > 1 / 8 + 0.1  # above chance (8 classes) on an untrained pico

    rows = pl.read_parquet(run / "eval.parquet").filter(pl.col("probe") == "eva_linear")
    bal = rows.filter(pl.col("metric") == "balanced_accuracy")
    assert bal["task"].to_list() == ["eva:pathfm:crc"] and bal["backbone"].to_list() == ["trained"]
    assert np.isclose(bal["value"][0], cmp["eva_balanced_accuracy"])
    print(json.dumps(cmp))


def test_eva_config_source_is_absolute_like_every_other_path(make_pico_run, tmp_path, monkeypatch):
    """A relative source (as typed in the run's parent folder) is written absolute: eva's own CLI then runs the
    config from any directory."""
    run = make_pico_run("eva_rel", 3)
    monkeypatch.chdir(run.parent)
    cfg = eva_config(run.name, "pathfm:crc", out_dir="o")
    writer = cfg["trainer"]["init_args"]["callbacks"][-1]["init_args"]
    source = Path(writer["backbone"]["init_args"]["arguments"]["source"])
    assert source.is_absolute() and source.is_dir() and source == run.resolve()
    from pathfm.eva.config import absolute_source

    assert absolute_source(f"hf:{run.name}") == f"hf:{run.resolve()}"
    assert absolute_source(f"timm:vit_small_patch14_dinov2:{run.name}") == f"timm:vit_small_patch14_dinov2:{run.resolve()}"
    assert absolute_source("timm:vit_small_patch14_dinov2") == "timm:vit_small_patch14_dinov2"
