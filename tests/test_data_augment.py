"""Multi-crop, nested subsets, tile folders, config validation of data fields, preview CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pathfm.cli import main
from pathfm.config import DataConfig, load_config
from pathfm.data.manifest import SlideEntry
from pathfm.data.multicrop import MultiCrop, photometric_scale, random_resized_crop_box
from pathfm.data.subsets import nested_subset
from pathfm.errors import ConfigError, PathfmError

OFF = dict(hflip=0.0, vflip=0.0, color_jitter=0.0, grayscale=0.0, blur_global1=0.0, blur_global2=0.0,
           blur_local=0.0, solarize_global2=0.0)


@pytest.fixture(scope="module")
def tile(samples):
    return np.asarray(Image.open(samples / "tissue_tiles" / "tissue-level0-4302-10273-4814-10785.png").convert("RGB"))


def _mc(**crops) -> MultiCrop:
    d = DataConfig()
    d = d.model_copy(update={"crops": d.crops.model_copy(update=crops), "hed": d.hed.model_copy(update={"strength": 0.0})})
    return MultiCrop(d)


def test_multicrop_shapes_and_normalisation(tile):
    g, loc = MultiCrop(DataConfig())(tile, np.random.default_rng(0))
    assert len(g) == 2 and len(loc) == 8
    assert g[0].shape == (3, 224, 224) and loc[0].shape == (3, 98, 98) and g[0].dtype == np.float32
    assert all(x.min() >= -1 and x.max() <= 1 for x in g + loc)
    # mean = std = 0.5: pixel value 255 -> 1, 0 -> -1; with every augmentation off a full-scale crop is the resized tile
    mc = _mc(**OFF, global_scale=(1.0, 1.0))
    full = mc(tile, np.random.default_rng(0))[0][0]
    ref = np.asarray(Image.fromarray(tile).resize((224, 224), Image.Resampling.BICUBIC)).transpose(2, 0, 1) / 127.5 - 1
    assert np.abs(full - ref).max() < 1e-5


def test_blur_probabilities_mean_what_they_say(tile):
    """The DINOv2 blur-probability bug is fixed: blur_global1=1.0 blurs global crop 1 every time."""
    rng_seeds = range(5)
    sharp = _mc(**OFF)
    blurred = _mc(**{**OFF, "blur_global1": 1.0})
    for s in rng_seeds:
        a = sharp(tile, np.random.default_rng(s))[0]
        b = blurred(tile, np.random.default_rng(s))[0]
        assert not np.array_equal(a[0], b[0])  # crop 1 blurred
        assert np.array_equal(a[1], b[1])  # crop 2 untouched, same geometry: switching one op moves nothing else
        # blur removes high frequencies
        assert np.abs(np.diff(b[0], axis=2)).mean() < np.abs(np.diff(a[0], axis=2)).mean()


def test_flips_and_solarize_switch(tile):
    base = _mc(**OFF, global_scale=(1.0, 1.0))(tile, np.random.default_rng(3))[0][0]
    v = _mc(**{**OFF, "vflip": 1.0}, global_scale=(1.0, 1.0))(tile, np.random.default_rng(3))[0][0]
    assert np.allclose(v, base[:, ::-1, :])
    sol = _mc(**{**OFF, "solarize_global2": 1.0}, global_scale=(1.0, 1.0))(tile, np.random.default_rng(3))[0]
    assert np.array_equal(sol[0], base) and (sol[1] <= 0.0 + 1e-6).all()  # pixels >= 128 inverted


def test_photometric_ramp_scale():
    assert photometric_scale(0, None) == 1.0 and photometric_scale(10**6, None) == 1.0
    assert [photometric_scale(s, (100, 300)) for s in (0, 99, 100, 200, 299, 300, 1000)] == [0, 0, 0, 0.5, 0.995, 1, 1]
    assert photometric_scale(5, (5, 5)) == 1.0


def test_photometric_factor_switches_colour_but_not_geometry(tile):
    """photometric=0 gives the purely geometric crops of the same draws; 1 is the configured augmentation."""
    photo = dict(OFF, color_jitter=1.0, grayscale=1.0, blur_global1=1.0, blur_local=1.0, solarize_global2=1.0)
    d = DataConfig()
    mc = MultiCrop(d.model_copy(update={"crops": d.crops.model_copy(update=photo)}))  # HED 0.05 on
    geometric = _mc(**OFF)
    for s in range(3):
        off = mc(tile, np.random.default_rng(s), photometric=0.0)
        ref = geometric(tile, np.random.default_rng(s))
        assert all(np.array_equal(a, b) for a, b in zip(off[0] + off[1], ref[0] + ref[1]))
        full = mc(tile, np.random.default_rng(s), photometric=1.0)
        assert all(np.array_equal(a, b) for a, b in zip(full[0] + full[1], mc(tile, np.random.default_rng(s))[0] + mc(tile, np.random.default_rng(s))[1]))
        assert not any(np.array_equal(a, b) for a, b in zip(full[0], ref[0]))


def test_dataset_ramps_photometric_augmentation_by_optimizer_step():
    cfg = load_config("smoke", ["data.crops.photometric_ramp=[2,4]", "optim.grad_accum=2"])
    from pathfm.data.loader import build_train_loader

    ds = build_train_loader(cfg, rank=0, world_size=2).dataset
    assert ds.samples_per_step == 8 * 2 * 2 and ds.photometric_ramp == (2, 4)
    assert cfg.highres_stage().data.crops.photometric_ramp is None


def test_random_resized_crop_respects_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y, w, h = random_resized_crop_box(rng, 256, 256, (0.05, 0.32))
        assert 0 <= x <= 256 - w and 0 <= y <= 256 - h
        assert 0.04 <= w * h / 256**2 <= 0.33


def _entries(n, patients=None):
    return [SlideEntry(path=f"s{i}.svs", slide_id=f"s{i:03d}", patient_id=None if patients is None else f"p{i // patients}")
            for i in range(n)]


def test_subsets_are_nested_seeded_and_order_independent():
    e = _entries(60)
    s12, s48 = nested_subset(e, 12, seed=0), nested_subset(e, 48, seed=0)
    assert {x.slide_id for x in s12} < {x.slide_id for x in s48}
    assert [x.slide_id for x in nested_subset(list(reversed(e)), 12, seed=0)] == [x.slide_id for x in s12]
    assert {x.slide_id for x in nested_subset(e, 12, seed=1)} != {x.slide_id for x in s12}
    assert nested_subset(e, None, seed=0) == e
    with pytest.raises(ConfigError, match="n_slides=61"):
        nested_subset(e, 61, seed=0)


def test_subsets_grouped_by_patient_keep_patients_together():
    e = _entries(60, patients=3)  # 20 patients, 3 slides each
    for n in (6, 12, 30):
        sub = nested_subset(e, n, seed=0, group_by_patient=True)
        pats = [x.patient_id for x in sub]
        assert all(pats.count(p) == 3 for p in set(pats))  # whole patients
    assert {x.slide_id for x in nested_subset(e, 6, 0, True)} < {x.slide_id for x in nested_subset(e, 30, 0, True)}


@pytest.mark.parametrize("override, field", [
    ("data.tissue.min_tissue_fraction=1.5", "data.tissue.min_tissue_fraction"),
    ("data.hed.strength=-0.1", "data.hed.strength"),
    ("data.tissue.h_max=200", "data.tissue.h_max"),
    ("data.crops.global_size=100", "data.crops.global_size"),
    ("data.mpps=[0.5,-1]", "data.mpps"),
])
def test_out_of_range_data_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.split(".")[-1]):
        load_config("smoke", [override])


def test_preview_cli_writes_a_png(tmp_path, cmu_slide):
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", str(cmu_slide), "--out", str(out), "--n", "4",
                 "--set", "data.tissue.thumbnail_size=256"]) == 0
    im = Image.open(out)
    assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 600
