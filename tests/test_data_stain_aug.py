"""Stain augmentation methods (data.stain_aug.method): HED, RandStainNA, Macenko (torchstain) on real tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pathfm.config import load_config
from pathfm.data.device_augment import resolve_augment_on
from pathfm.data.macenko import macenko_augment, macenko_decompose, macenko_reconstruct, sample_macenko_params
from pathfm.data.multicrop import MultiCrop, apply_crop_opencv, apply_crop_pil
from pathfm.data.randstainna import (RandStainNAStats, channel_stats, fit_randstainna_stats, randstainna_augment,
                                     sample_randstainna_template)
from pathfm.errors import ConfigError

METHODS = ("hed", "randstainna", "macenko")


@pytest.fixture(scope="module")
def tile(samples) -> np.ndarray:
    img = Image.open(samples / "tissue_tiles" / "tissue-level0-4302-10273-4814-10785.png").convert("RGB")
    return np.ascontiguousarray(np.asarray(img)[:224, :224])


def _multicrop(method: str, *overrides: str) -> MultiCrop:
    return MultiCrop(load_config("smoke", [f"data.stain_aug.method={method}", "data.crops.n_local=1", *overrides]).data)


@pytest.mark.parametrize("method", METHODS)
def test_method_changes_colour_keeps_shape_and_is_deterministic(tile, method):
    mc, ref = _multicrop(method), _multicrop("none")
    params = mc.draw(np.random.default_rng(3), 224, 224)
    assert all((p.hed if method == "hed" else p.stain) is not None for p in params)
    for apply in (apply_crop_opencv, apply_crop_pil):
        out = apply(Image.fromarray(tile), params[0], 112)
        plain = apply(Image.fromarray(tile), ref.draw(np.random.default_rng(3), 224, 224)[0], 112)
        assert out.shape == plain.shape == (112, 112, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - plain).mean() > 1.0  # the colour changed
        assert np.array_equal(out, apply(Image.fromarray(tile), mc.draw(np.random.default_rng(3), 224, 224)[0], 112))
    g1, _ = mc(tile, np.random.default_rng(5))
    g2, _ = mc(tile, np.random.default_rng(5))
    g3, _ = mc(tile, np.random.default_rng(6))
    assert np.array_equal(g1[0], g2[0]) and not np.array_equal(g1[0], g3[0])


@pytest.mark.parametrize("method,strength_key", [("hed", "data.hed.strength"),
                                                 ("randstainna", "data.stain_aug.randstainna.strength"),
                                                 ("macenko", "data.stain_aug.macenko.strength")])
def test_strength_zero_is_the_identity_and_moves_no_other_draw(tile, method, strength_key):
    zero, none = _multicrop(method, f"{strength_key}=0"), _multicrop("none")
    a, b = zero(tile, np.random.default_rng(11)), none(tile, np.random.default_rng(11))
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert np.array_equal(x, y)
    # switching the method moves no box, flip, jitter or blur decision
    strong = _multicrop(method).draw(np.random.default_rng(2), 224, 224)
    for p, q in zip(strong, none.draw(np.random.default_rng(2), 224, 224)):
        assert (p.box, p.hflip, p.vflip, p.jitter, p.blur_sigma, p.solarize) == \
               (q.box, q.hflip, q.vflip, q.jitter, q.blur_sigma, q.solarize)


def test_method_functions_identity_at_zero(tile):
    assert np.array_equal(macenko_augment(tile, sample_macenko_params(np.random.default_rng(0), 0.0)), tile)
    tpl = sample_randstainna_template(np.random.default_rng(0), RandStainNAStats.load())
    assert np.array_equal(randstainna_augment(tile, tpl, 0.0, "lab"), tile)
    blank = np.full((64, 64, 3), 250, np.uint8)  # no stained pixel: no stain matrix, returned unchanged
    assert np.array_equal(macenko_augment(blank, (1.2, 0.8, 0.1, -0.1)), blank)


def test_macenko_round_trip_on_a_real_tile(tile):
    he, conc = macenko_decompose(tile)
    assert he.shape == (3, 2) and conc.shape == (2, 224 * 224)
    # haematoxylin first, eosin second, close to the reference H&E directions torchstain ships
    ref = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
    cos = (he * ref).sum(0) / np.linalg.norm(he, axis=0) / np.linalg.norm(ref, axis=0)
    assert cos.min() > 0.98, cos
    rebuilt = np.clip(macenko_reconstruct(he, conc, tile.shape), 0, 255)
    od = -np.log((tile.reshape(-1, 3) + 1.0) / 240.0)
    stained = np.all(od >= 0.15, axis=1).reshape(224, 224)
    assert stained.mean() > 0.3
    err = np.abs(rebuilt - tile)[stained]
    assert err.mean() < 2.5, err.mean()  # measured 1.52 grey levels: two stains explain the tissue
    # the perturbation acts on the concentrations: a pure eosin scale leaves the haematoxylin unchanged
    out = macenko_augment(tile, (1.0, 1.5, 0.0, 0.0))
    he2, conc2 = macenko_decompose(out)
    c_new = np.linalg.lstsq(he, -np.log((out.reshape(-1, 3) + 1.0) / 240.0).T, rcond=None)[0]
    s = stained.reshape(-1) & (conc[1] > 0.2)
    ratio = np.median(c_new[1, s] / conc[1, s])
    assert 1.4 < ratio < 1.6, ratio
    assert abs(np.median(c_new[0, s] - conc[0, s])) < 0.02


def test_randstainna_moves_lab_statistics_to_the_template(tile):
    stats = RandStainNAStats.load()
    for seed in range(3):
        tpl = sample_randstainna_template(np.random.default_rng(seed), stats)
        mean, std = channel_stats(randstainna_augment(tile, tpl, 1.0, "lab"), "lab")
        np.testing.assert_allclose(mean, tpl[:3], atol=0.5)  # measured <= 0.2 (rounding, clipping)
        np.testing.assert_allclose(std, tpl[3:], atol=0.5)
        half_mean, _ = channel_stats(randstainna_augment(tile, tpl, 0.5, "lab"), "lab")
        own_mean, _ = channel_stats(tile, "lab")
        np.testing.assert_allclose(half_mean, (own_mean + np.asarray(tpl[:3])) / 2, atol=0.5)


def test_randstainna_fit_save_load(tmp_path, tile, samples):
    tiles = [tile, tile[::-1].copy(), np.asarray(Image.open(samples / "tissue_tiles" / "tissue-level0-7352-11762-7864-12274.png").convert("RGB"))]
    stats = fit_randstainna_stats(tiles, "hsv", source="three tiles")
    per = np.stack([channel_stats(t, "hsv")[0] for t in tiles])
    np.testing.assert_allclose(stats.mean_of_means, per.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.std_of_means, per.std(0), atol=1e-5)
    stats.save(tmp_path / "s.yaml")
    assert RandStainNAStats.load(tmp_path / "s.yaml") == stats
    with pytest.raises(ConfigError, match="no file .*missing.yaml"):
        RandStainNAStats.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="at least 2 tiles"):
        fit_randstainna_stats([tile])
    bundled = RandStainNAStats.load()
    assert bundled.color_space == "lab" and bundled.n_images == 200 and "samples/wsi" in bundled.source


def test_config_knob_and_device_path():
    cfg = load_config("smoke")
    assert cfg.data.stain_aug.method == "hed" and cfg.data.hed.strength == 0.05  # existing configs unchanged
    assert load_config("smoke", ["stain_aug=macenko"]).data.stain_aug.method == "macenko"
    with pytest.raises(ConfigError, match="CPU workers only"):
        load_config("smoke", ["data.stain_aug.method=randstainna", "data.augment_on=device"])
    with pytest.raises(ConfigError, match="stain_aug.method"):
        load_config("smoke", ["data.stain_aug.method=reinhard"])
    assert resolve_augment_on("auto", "cuda", cpu_only=True) == "cpu"
    assert resolve_augment_on("auto", "cuda") == "device"
    p = _multicrop("macenko").draw(np.random.default_rng(0), 224, 224)[0]
    with pytest.raises(ValueError, match="augment_on=cpu"):
        p.to_row()


def test_stain_stats_command_fits_from_the_training_tiles(tmp_path, capsys):
    from pathfm.cli import main

    out = tmp_path / "stats.yaml"
    assert main(["data", "stain-stats", "--config", "smoke", "--n-tiles", "4", "--out", str(out),
                 "--set", f"data.mask_cache={tmp_path / 'cache'}"]) == 0
    stats = RandStainNAStats.load(out)
    assert stats.n_images == 4 and stats.color_space == "lab" and "samples/wsi/manifest.csv" in stats.source
    assert 20 < stats.mean_of_means[0] < 95 and all(s > 0 for s in stats.mean_of_stds)  # tissue, not blank tiles
    assert "wrote" in capsys.readouterr().out
    cfg = load_config("smoke", ["data.stain_aug.method=randstainna", f"data.stain_aug.randstainna.stats={out}"])
    assert MultiCrop(cfg.data).stain_aug.stats == stats
    assert main(["data", "stain-stats", "--n-tiles", "1", "--out", str(out)]) == 2
