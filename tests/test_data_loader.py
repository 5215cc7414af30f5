"""The training stream: real multi-crop batches from the bundled slides, the data contract, determinism,
resume, workers, bad slides during training."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from pathfm.config import load_config
from pathfm.data import build_train_loader
from pathfm.data.dataset import OnlinePatchDataset, collate_multicrop
from pathfm.errors import ConfigError, SlideError

SMALL = ["run.progress=false", "data.tissue.thumbnail_size=256", "data.batch_size=3", "data.tile_size=96", "data.crops.global_size=56",
         "data.crops.local_size=28", "data.crops.n_local=2"]


def small_cfg(*extra):
    return load_config("smoke", SMALL + list(extra))


@pytest.fixture(scope="module")
def dataset():
    return OnlinePatchDataset.from_config(small_cfg())


def test_batch_follows_the_contract(dataset):
    cfg = small_cfg()
    loader = build_train_loader(cfg, dataset=dataset)
    assert isinstance(loader, torch.utils.data.DataLoader)
    batch = next(iter(loader))
    b = 3
    assert batch["n_images"] == b
    assert batch["global_crops"].shape == (2 * b, 3, 56, 56) and batch["global_crops"].dtype == torch.float32
    assert batch["local_crops"].shape == (2 * b, 3, 28, 28)
    g = batch["global_crops"]
    assert g.min() >= -1.0 and g.max() <= 1.0 and g.std() > 0.05
    st = batch["tile_stats"]
    assert set(st) == {"draws", "accepted", "rejected", "skipped_slides"}
    assert st["accepted"] == b and st["draws"] == st["accepted"] + st["rejected"]
    # crop-major: row c*B + i is crop c of image i, and sample k is a pure function of (seed, k)
    for i, k in enumerate(batch["indices"]):
        s = dataset[k]
        for c in range(2):
            assert np.array_equal(batch["global_crops"][c * b + i].numpy(), s["global"][c])
            assert np.array_equal(batch["local_crops"][c * b + i].numpy(), s["local"][c])
    rate = loader.dataset.acceptance_rate()
    assert 0 < rate["overall"] <= 1 and set(rate["per_slide"]) <= set(dataset.slide_ids)


def test_samples_are_pure_functions_of_seed_and_index(dataset):
    a, b = dataset[7], dataset[7]
    assert all(np.array_equal(x, y) for x, y in zip(a["global"] + a["local"], b["global"] + b["local"]))
    c = dataset[8]
    assert not np.array_equal(a["global"][0], c["global"][0])
    other = OnlinePatchDataset.from_config(small_cfg("seed=1"))
    assert not np.array_equal(a["global"][0], other[7]["global"][0])


def test_resume_and_ranks_partition_the_stream(dataset):
    cfg = small_cfg()
    it = iter(build_train_loader(cfg, dataset=dataset))
    first, second = next(it), next(it)
    resumed = next(iter(build_train_loader(cfg, start_sample=3, dataset=dataset)))
    assert resumed["indices"] == second["indices"] == [3, 4, 5]
    assert torch.equal(resumed["global_crops"], second["global_crops"])
    r0 = next(iter(build_train_loader(cfg, rank=0, world_size=2, dataset=dataset)))
    r1 = next(iter(build_train_loader(cfg, rank=1, world_size=2, dataset=dataset)))
    assert r0["indices"] == [0, 1, 2] and r1["indices"] == [3, 4, 5]
    assert torch.equal(r0["global_crops"], first["global_crops"])
    with pytest.raises(ConfigError):
        build_train_loader(cfg, rank=2, world_size=2, dataset=dataset)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_give_the_same_batches(dataset):
    cfg0 = small_cfg()
    cfg2 = small_cfg("data.num_workers=2")
    it0 = iter(build_train_loader(cfg0, dataset=dataset))
    loader2 = build_train_loader(cfg2, dataset=OnlinePatchDataset.from_config(cfg2))
    it2 = iter(loader2)
    for _ in range(3):
        a, b = next(it0), next(it2)
        assert a["indices"] == b["indices"]
        assert torch.equal(a["global_crops"], b["global_crops"]) and torch.equal(a["local_crops"], b["local_crops"])
        assert a["tile_stats"] == b["tile_stats"]
    assert loader2.dataset.acceptance_rate()["accepted"] == 9  # worker counts reach the main process


def test_no_local_crops_and_highres_crop_sizes():
    cfg = small_cfg("data.crops.n_local=0")
    batch = next(iter(build_train_loader(cfg)))
    assert batch["local_crops"].shape == (0, 3, 28, 28)
    hr = load_config("smoke", ["run.progress=false", "highres.enabled=true", "highres.global_size=84",
                               "highres.local_size=42", "highres.tile_size=128", "data.batch_size=2",
                               "data.tissue.thumbnail_size=256"]).highres_stage()
    batch = next(iter(build_train_loader(hr)))
    assert batch["global_crops"].shape == (4, 3, 84, 84) and batch["local_crops"].shape == (8, 3, 42, 42)


def test_slide_without_mpp_stops_the_loader_with_the_fix(wsi_dir):
    with pytest.raises(SlideError) as e:
        build_train_loader(small_cfg(f"data.slides={wsi_dir}"))
    msg = str(e.value)
    assert "TCGA-CR-7395-01A-01-TS1" in msg and "assume_mpp" in msg and "mpp' column" in msg
    loader = build_train_loader(small_cfg(f"data.slides={wsi_dir}", "data.assume_mpp=0.5"))
    assert next(iter(loader))["n_images"] == 3


def test_unreadable_slide_in_manifest_fails_before_training(tmp_path, cmu_slide, bad_tiff):
    m = tmp_path / "m.csv"
    m.write_text(f"path\n{cmu_slide}\n{bad_tiff}\n")
    with pytest.raises(SlideError, match="kidney-48-5.tif"):
        build_train_loader(small_cfg(f"data.slides={m}"))


def test_slide_deleted_during_training_is_skipped_and_counted(tmp_path, cmu_slide, pyramid_slide):
    for p in (cmu_slide, pyramid_slide):
        shutil.copy(p, tmp_path)
    cfg = small_cfg(f"data.slides={tmp_path}", "data.batch_size=8")
    ds = OnlinePatchDataset.from_config(cfg)
    (tmp_path / cmu_slide.name).unlink()  # vanishes after validation, before any read
    with pytest.warns(RuntimeWarning, match="CMU-1-Small-Region .*dropped.*unreadable"):
        batch = next(iter(build_train_loader(cfg, dataset=ds)))
    assert batch["n_images"] == 8 and batch["tile_stats"]["skipped_slides"] == 1
    assert set(batch["slide_ids"]) == {"CMU-1-Small-Region.generic-tiled-pyramid"}
    assert ds.acceptance_rate()["skipped_slides"] == 1


def _blank_slide(path):
    """A real tiled pyramidal TIFF that openslide reads, containing only white glass."""
    import tifffile

    img = np.full((1024, 1024, 3), 246, np.uint8)
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), photometric="rgb", compression="zlib")
        tw.write(img[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib")


def test_slide_without_tissue_is_dropped_with_a_warning(tmp_path, cmu_slide):
    _blank_slide(tmp_path / "blank.tiff")
    m = tmp_path / "m.csv"
    m.write_text(f"path,mpp\n{cmu_slide},\nblank.tiff,0.5\n")
    with pytest.warns(RuntimeWarning, match="blank .*no tissue"):
        ds = OnlinePatchDataset.from_config(small_cfg(f"data.slides={m}"))
    assert ds.slide_ids == ["CMU-1-Small-Region"]
    m.write_text("path,mpp\nblank.tiff,0.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SlideError, match="none of the 1 slide"):
            OnlinePatchDataset.from_config(small_cfg(f"data.slides={m}"))


def test_slide_yielding_no_accepted_tile_is_dropped_not_looped(cmu_slide, tmp_path):
    """With an impossible filter every slide is dropped after max_draws, then a clear error (no hang)."""
    # v_max=150: the dark box leaves every slide some thumbnail tissue (TCGA: 179 of 256x206 pixels; at 120 its
    # reduced-resolution thumbnail keeps none and the slide is dropped before sampling) but no all-tissue tile
    cfg = small_cfg("data.tissue.min_tissue_fraction=1.0", "data.tissue.max_draws=4", "data.tissue.v_max=150")
    ds = OnlinePatchDataset.from_config(cfg)
    with pytest.warns(RuntimeWarning, match="dropped from sampling: no tile passed"):
        with pytest.raises(SlideError, match="every slide was dropped"):
            ds[0]
    assert ds.acceptance_rate()["accepted"] == 0 and ds.acceptance_rate()["draws"] >= 4 * 3


def test_filter_off_accepts_every_draw():
    ds = OnlinePatchDataset.from_config(small_cfg("data.tissue.enabled=false"))
    batch = collate_multicrop([ds[k] for k in range(6)])
    assert batch["tile_stats"]["rejected"] == batch["tile_stats"]["draws"] - 6
    assert ds.acceptance_rate()["per_slide"]


def test_fixed_tile_pool(dataset):
    ds = OnlinePatchDataset.from_config(small_cfg("data.n_tiles=4"))
    a, b = ds[1], ds[5]
    assert a["slide_id"] == b["slide_id"] and a["mpp"] == b["mpp"]  # same pooled tile
    assert not np.array_equal(a["global"][0], b["global"][0])  # different augmentation
