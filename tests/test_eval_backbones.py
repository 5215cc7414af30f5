"""Backbone sources, feature extraction and the feature cache of pathfm.eval (real pico ViT, real tiles)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pathfm.errors import PathfmError
from pathfm.eval.backbones import timm_backbone
from pathfm.eval.sources import load_source
from pathfm.eval.evaluation import backbone_features
from pathfm.eval.features import FeatureCache, color_histogram_features, extract_features
from pathfm.eval.tasks import get_task
from pathfm.eval.tiles import load_samples


@pytest.fixture(scope="module")
def pico_run(make_pico_run):
    """A run dir holding an exported pico teacher (seed 0) and its config."""
    return make_pico_run("pico_run", step=7)


@pytest.fixture(scope="module")
def crc_small():
    smp = load_samples(get_task("crc_crops"))
    return smp.images[::24]  # 18 crops of 112 px, all classes


def test_run_dir_source(pico_run):
    bb = load_source(pico_run)
    assert bb.arch == "vit_pico" and bb.step == 7 and bb.run_dir == pico_run
    assert bb.native_size == 112 and bb.mean == (0.5,) * 3
    assert bb.identity == load_source(pico_run / "teacher_backbone.pt").identity


def test_trained_and_random_backbones_give_different_features(pico_run, crc_small):
    bb = load_source(pico_run)
    rnd = bb.random_init()
    assert type(rnd.model) is type(bb.model) and rnd.identity != bb.identity
    a = extract_features(bb.model, crc_small, pooling="cls+mean")
    b = extract_features(rnd.model, crc_small, pooling="cls+mean")
    assert a.shape == b.shape == (len(crc_small), 2 * bb.model.embed_dim)
    assert np.abs(a - b).mean() > 0.1 * np.abs(a).mean()
    # the same weights give the same features; CLS and mean halves are the two poolings
    np.testing.assert_allclose(extract_features(bb.model, crc_small, batch_size=5), a, rtol=1e-4, atol=1e-5)
    cls = extract_features(bb.model, crc_small, pooling="cls")
    np.testing.assert_allclose(a[:, : bb.model.embed_dim], cls, rtol=1e-4, atol=1e-5)


def test_extraction_keeps_training_flag_and_resizes(pico_run, crc_small):
    model = load_source(pico_run).model.train()
    feats = extract_features(model, crc_small[:3], resize=56, pooling="mean")
    assert model.training and feats.shape == (3, model.embed_dim) and np.isfinite(feats).all()
    with pytest.raises(PathfmError, match="not a multiple of the model's patch size 14"):
        extract_features(model, crc_small[:2], resize=100)


def test_feature_cache_roundtrip(pico_run, tmp_path):
    smp = load_samples(get_task("osteo"))
    bb = load_source(pico_run)
    cache = FeatureCache(tmp_path)
    kw = dict(pooling="cls", resize=56, batch_size=64, device="cpu", cache=cache, progress=False, label="t")
    first = backbone_features(bb, smp, **kw)
    (entry,) = list(tmp_path.glob("osteo-*.npy"))
    np.save(entry, np.full_like(first, 7.0))  # a cache hit must return the stored array, not recompute
    assert (backbone_features(bb, smp, **kw) == 7.0).all()
    assert not (backbone_features(bb, smp, **{**kw, "pooling": "mean"}) == 7.0).all()  # options change the key
    assert len(list(tmp_path.glob("*.tmp"))) == 0


def test_timm_source_and_color_histogram(crc_small):
    bb = timm_backbone("vit_tiny_patch16_224")
    assert bb.model.embed_dim == 192 and bb.model.patch_size == 16
    feats = extract_features(bb.model, crc_small[:2], mean=bb.mean, std=bb.std, resize=64)
    assert feats.shape == (2, 384)
    hist = color_histogram_features(crc_small)
    assert hist.shape == (len(crc_small), 54)
    np.testing.assert_allclose(hist[:, :16].sum(1), 1.0, rtol=1e-6)
    with pytest.raises(PathfmError, match="timm has no model 'vit_tinyy_patch16_224'; did you mean"):
        load_source("timm:vit_tinyy_patch16_224")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_that_are_not_ours(tmp_path, pico_run):
    with pytest.raises(PathfmError, match="no such run directory"):
        load_source(tmp_path / "missing")
    with pytest.raises(PathfmError, match="no teacher_backbone.pt"):
        load_source(tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(PathfmError, match="notes.pt"):
        load_source(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(PathfmError, match="not a pathfm backbone"):
        load_source(foreign)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Boom()))  # weights_only=True must refuse to run pickled code
    with pytest.raises(PathfmError, match="evil.pt"):
        load_source(evil)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_with_another_architecture(tmp_path, pico_run):
    obj = torch.load(pico_run / "teacher_backbone.pt", weights_only=True)
    obj["model"]["arch"] = "vit_tiny"  # declares a wider ViT than its weights
    torch.save(obj, tmp_path / "liar.pt")
    with pytest.raises(PathfmError, match=r"liar.pt: weights do not fit the declared architecture vit_tiny"):
        load_source(tmp_path / "liar.pt")


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))
