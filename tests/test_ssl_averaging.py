"""Checkpoint averaging: the exported average is the mean of the checkpoints' teacher tensors, and it evaluates."""

from __future__ import annotations

import pytest
import torch

from pathfm.backbone import checkpoint as ckpt
from pathfm.backbone.averaging import average_state_dicts, last_checkpoints
from pathfm.backbone.backbone_file import load_backbone
from pathfm.cli import main
from pathfm.config import load_config
from pathfm.errors import PathfmError
from pathfm.eval import evaluate
from pathfm.ssl.trainer import train

TINY = ["data.batch_size=2", "data.crops.n_local=1", "run.progress=false", "optim.warmup_steps=1",
        "optim.teacher_temp_warmup_steps=1", "optim.freeze_last_layer_steps=0", "run.threads=1", "model.layerscale=null",
        "optim.momentum_teacher=0.5", "data.n_slides=1", "data.tissue.thumbnail_size=256"]  # fast-moving teacher


def test_average_of_state_dicts_is_the_mean_and_refuses_mismatches():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and torch.equal(avg["n"], torch.tensor([3]))
    with pytest.raises(PathfmError, match="different keys"):
        average_state_dicts([a, {"w": a["w"]}])
    with pytest.raises(PathfmError, match="'n'.*differs"):
        average_state_dicts([a, dict(b, n=torch.tensor([4]))])
    with pytest.raises(PathfmError, match="different shapes"):
        average_state_dicts([a, dict(b, w=torch.zeros(3))])


@pytest.mark.slow  # ~12 s on 2 cores: 4 training steps and a kNN evaluation
@pytest.mark.timeout(600)
def test_export_average_last_k_equals_the_mean_and_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = load_config("smoke", TINY + ["optim.steps=4", "run.checkpoint_every=1", "run.keep_checkpoints=3"])
    train(cfg, run)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3, 4]
    assert main(["export", str(run), "--average-last", "3"]) == 0
    out = run / "teacher_backbone_avg3.pt"
    assert str(out) in capsys.readouterr().out
    model, meta = load_backbone(out)
    assert meta["averaged_steps"] == [2, 3, 4] and meta["step"] == 4
    teachers = [ckpt.load_checkpoint(p)["teacher"]["backbone"] for _, p in ckpt.list_checkpoints(run)]
    got = model.state_dict()
    for k, v in got.items():
        expected = torch.stack([t[k] for t in teachers]).mean(0)
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-6)
    moved = max((teachers[-1][k] - got[k]).abs().max().item() for k in got)
    assert moved > 1e-4  # the average is not simply the last checkpoint
    df = evaluate(str(out), tasks=["crc"], probes=["knn"], baselines=False, n_folds=2, progress=False,
                  verbose=False, device="cpu", cache_dir=None, output=None, resize=112)
    assert df.filter(df["metric"] == "balanced_accuracy")["value"].is_between(0.0, 1.0).all() and df.height > 0
    with pytest.raises(PathfmError, match=r"3 checkpoint\(s\) of stage 'main' found, 4 asked for.*keep_checkpoints>=4"):
        last_checkpoints(run, 4)
    with pytest.raises(PathfmError, match="stage 'highres' found"):
        last_checkpoints(run, 1, stage="highres")
