"""Slides, manifests and `pathfm data scan` on the bundled real slides, including the bad inputs."""

from __future__ import annotations

import csv
import multiprocessing as mp
import shutil

import numpy as np
import pytest

from pathfm.cli import main
from pathfm.data.manifest import load_manifest
from pathfm.data.slides import SlideCache, SlideGeometry, metadata_mpp, open_slide, read_tile, resolve_mpp
from pathfm.errors import PathfmError, SlideError


@pytest.fixture(scope="module")
def broken_slides(tmp_path_factory, cmu_slide, bad_tiff):
    d = tmp_path_factory.mktemp("broken")
    data = cmu_slide.read_bytes()
    (d / "truncated.svs").write_bytes(data[: len(data) // 3])
    (d / "notes.svs").write_text("this is a text file, not a slide\n")
    shutil.copy(bad_tiff, d / "kidney-48-5.tif")
    return d


@pytest.mark.parametrize("name", ["truncated.svs", "notes.svs", "kidney-48-5.tif"])
def test_unreadable_slides_raise_slide_error_naming_the_file(broken_slides, name):
    with pytest.raises(SlideError, match=name):
        open_slide(broken_slides / name)


def test_missing_slide_is_named(tmp_path):
    with pytest.raises(SlideError, match="not found.*nope.svs"):
        open_slide(tmp_path / "nope.svs")


def test_mpp_from_metadata_override_or_explicit_assumption(cmu_slide, tcga_slide):
    s = open_slide(cmu_slide)
    assert metadata_mpp(s) == pytest.approx(0.499)
    t = open_slide(tcga_slide)
    assert metadata_mpp(t) is None
    with pytest.raises(SlideError, match="TCGA-CR-7395.*no resolution.*assume_mpp"):
        resolve_mpp(tcga_slide, None, None, None)
    assert resolve_mpp(tcga_slide, None, None, 0.5) == (0.5, "assume_mpp")
    assert resolve_mpp(tcga_slide, None, 0.25, 0.5) == (0.25, "manifest")
    assert resolve_mpp(cmu_slide, 0.499, None, 0.25) == (0.499, "metadata")


def test_pyramid_level_read_matches_full_resolution_read(cmu_slide, pyramid_slide):
    """A 2 um/px tile read from level 2 of the pyramid looks like the same region read at level 0 of
    the single-level slide and downsampled."""
    a, b = open_slide(cmu_slide), open_slide(pyramid_slide)
    ga, gb = SlideGeometry.of(a), SlideGeometry.of(b)
    assert gb.best_level(4.0) == 2 and ga.best_level(4.0) == 0 and gb.best_level(1.5) == 0
    ta = read_tile(a, ga, 400, 800, 512.0, 128)
    tb = read_tile(b, gb, 400, 800, 512.0, 128)
    assert ta.shape == tb.shape == (128, 128, 3) and ta.dtype == np.uint8
    assert np.abs(ta.astype(int) - tb.astype(int)).mean() < 12


def test_outside_the_slide_reads_white(cmu_slide):
    s = open_slide(cmu_slide)
    t = read_tile(s, SlideGeometry.of(s), 2200, 2900, 128.0, 64)
    assert (t[-10:, -10:] == 255).all()


def _child_opens(cache, path, q):
    cache.get(path)
    q.put((len(cache), cache.opens))


@pytest.mark.timeout(120)
def test_handle_cache_is_bounded_and_reopened_after_fork(wsi_dir):
    paths = sorted(p for p in wsi_dir.iterdir() if p.suffix in (".svs", ".tiff"))
    cache = SlideCache(max_open=2)
    for p in paths:
        cache.get(p)
    assert len(cache) == 2 and cache.opens == 3
    cache.get(paths[-1])  # hit
    assert cache.opens == 3
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child_opens, args=(cache, paths[-1], q))
    proc.start()
    proc.join(30)
    n_open, opens = q.get(timeout=5)
    assert n_open == 1 and opens == 4  # the child did not reuse the parent's handle


def test_manifest_lists_all_missing_files_before_opening(tmp_path, cmu_slide):
    m = tmp_path / "m.csv"
    m.write_text(f"path,slide_id,mpp\n{cmu_slide},a,\ngone1.svs,b,\nsub/gone2.svs,c,0.5\n")
    with pytest.raises(SlideError) as e:
        load_manifest(m)
    assert "2 slide file(s)" in str(e.value) and "gone1.svs" in str(e.value) and "gone2.svs" in str(e.value)


def test_manifest_validation(tmp_path, cmu_slide):
    m = tmp_path / "m.csv"
    m.write_text(f"path,slide_id\n{cmu_slide},a\n{cmu_slide},a\n")
    with pytest.raises(PathfmError, match="duplicate slide_id 'a'"):
        load_manifest(m)
    m.write_text(f"path,mpp\n{cmu_slide},-1\n")
    with pytest.raises(PathfmError, match="mpp must be > 0"):
        load_manifest(m)
    m.write_text("slide,x\na,b\n")
    with pytest.raises(PathfmError, match="'path' column"):
        load_manifest(m)


def test_bundled_manifest_marks_the_assumed_mpp(wsi_dir):
    entries = {e.slide_id: e for e in load_manifest(wsi_dir / "manifest.csv")}
    tcga = entries["TCGA-CR-7395-01A-01-TS1"]
    assert tcga.mpp == 0.5 and "ASSUMED" in tcga.extra["mpp_note"]
    assert entries["CMU-1-Small-Region"].mpp is None  # read from the slide


def test_scan_cli_writes_manifest(tmp_path, wsi_dir, capsys):
    out = tmp_path / "slides.csv"
    assert main(["data", "scan", str(wsi_dir), "--out", str(out), "--no-progress"]) == 0
    rows = {r["slide_id"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"CMU-1-Small-Region", "CMU-1-Small-Region.generic-tiled-pyramid", "TCGA-CR-7395-01A-01-TS1"}
    cmu = rows["CMU-1-Small-Region.generic-tiled-pyramid"]
    assert (cmu["width"], cmu["height"], cmu["levels"], cmu["mpp_source"]) == ("2220", "2967", "3", "metadata")
    assert 0.2 < float(cmu["tissue_fraction"]) < 0.6 and float(cmu["tissue_area_mm2"]) > 0.2
    assert rows["TCGA-CR-7395-01A-01-TS1"]["mpp"] == "" and rows["TCGA-CR-7395-01A-01-TS1"]["mpp_source"] == "missing"
    err = capsys.readouterr().err
    assert "without resolution metadata: TCGA-CR-7395-01A-01-TS1" in err and "assume_mpp" in err
    # the written manifest loads back (paths relative to its folder)
    assert len(load_manifest(out)) == 3


def test_scan_reports_every_unreadable_slide(tmp_path, broken_slides, cmu_slide, capsys):
    d = tmp_path / "mixed"
    shutil.copytree(broken_slides, d)
    shutil.copy(cmu_slide, d)
    out = tmp_path / "s.parquet"
    assert main(["data", "scan", str(d), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    for name in ("truncated.svs", "notes.svs", "kidney-48-5.tif"):
        assert name in err
    assert not out.exists()
    assert main(["data", "scan", str(d), "--out", str(out), "--no-progress", "--skip-bad"]) == 0
    import polars as pl

    df = pl.read_parquet(out)
    assert df["slide_id"].to_list() == ["CMU-1-Small-Region"]


def test_read_size_snaps_to_an_integer_factor_within_one_percent(cmu_slide):
    from pathfm.data.slides import level_read_size

    assert level_read_size(1026.05, 256) == 1024  # 2 um/px from a 0.499 um/px level: exact 4x box average
    assert level_read_size(256.5, 256) == 256 and level_read_size(513.0, 256) == 512
    assert level_read_size(300.0, 256) == 300 and level_read_size(100.0, 128) == 100  # real resampling kept
    s = open_slide(cmu_slide)
    g = SlideGeometry.of(s)
    snapped = read_tile(s, g, 600, 900, 1026.05, 256)
    exact = np.asarray(s.read_region((600, 900), 0, (1024, 1024)).convert("RGB").reduce(4))
    assert np.array_equal(snapped, exact)
