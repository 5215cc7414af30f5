"""Slide readers on the bundled slides: tiffslide through file:// and fsspec's memory:// filesystem and
wsidicom on a DICOM WSI made from a bundled slide, each against openslide; remote slides that vanish."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pytest

from pathfm.config import TissueFilterConfig, load_config
from pathfm.data.hsv import HSVFilter
from pathfm.data.manifest import load_manifest
from pathfm.data.patching import TileSampler, build_sources
from pathfm.data.readers import ReaderOptions, choose_reader, level0_for, open_reader
from pathfm.data.slides import SlideGeometry, read_tile
from pathfm.data.tissue import TissueMask
from pathfm.errors import SlideError

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("tiffslide")

SLIDES = ["CMU-1-Small-Region.svs", "CMU-1-Small-Region.generic-tiled-pyramid.tiff", "TCGA-CR-7395-01A-01-TS1.svs"]
TIFFSLIDE = ReaderOptions(reader="tiffslide")


@pytest.fixture
def bucket(wsi_dir):
    """The bundled slides as objects of fsspec's in-memory filesystem (stands in for s3://bucket/...)."""
    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    for name in SLIDES:
        fs.pipe(f"{root}/{name}", (wsi_dir / name).read_bytes())
    yield fs, f"memory:/{root}"
    fs.rm(root, recursive=True)


def _rgb(reader, location, level, size):
    return np.asarray(reader.read_region(location, level, size)).astype(int)


@pytest.mark.parametrize("name", SLIDES)
def test_tiffslide_file_and_memory_urls_give_openslide_pixels(wsi_dir, bucket, name):
    """Level 0: identical pixels at random locations (tolerance 0). Coarser levels: identical where
    openslide's level coordinate is a whole pixel; elsewhere openslide resamples at a sub-pixel offset,
    so 256 px training tiles from random locations differ by a mean of at most 16/255 (measured: mean
    over tiles 1.7 and 2.8 on the two pyramids, 0 on the one-level slide)."""
    ref = open_reader(wsi_dir / name)
    via_file = open_reader(f"file://{wsi_dir / name}", TIFFSLIDE)
    via_memory = open_reader(f"{bucket[1]}/{name}")
    assert (ref.backend, via_file.backend, via_memory.backend) == ("openslide", "tiffslide", "tiffslide")
    g = SlideGeometry.of(ref)
    assert SlideGeometry.of(via_file) == SlideGeometry.of(via_memory) == g
    assert via_file.mpp == via_memory.mpp == ref.mpp
    rng = np.random.default_rng(0)
    for _ in range(6):
        loc = (int(rng.integers(0, g.width - 200)), int(rng.integers(0, g.height - 200)))
        a = _rgb(ref, loc, 0, (200, 150))
        assert np.array_equal(a, _rgb(via_file, loc, 0, (200, 150)))
        assert np.array_equal(a, _rgb(via_memory, loc, 0, (200, 150)))
    for level in range(1, len(g.level_downsamples)):
        assert np.array_equal(_rgb(ref, (0, 0), level, (128, 128)), _rgb(via_memory, (0, 0), level, (128, 128)))
    means = []
    for extent in (256.0, 512.0, 1026.05, 300.0):
        for _ in range(5):
            x, y = int(rng.integers(0, g.width - 100)), int(rng.integers(0, g.height - 100))
            a = read_tile(ref, g, x, y, extent, 128).astype(int)
            b = read_tile(via_memory, g, x, y, extent, 128).astype(int)
            means.append(np.abs(a - b).mean())
    assert max(means) < 16.0
    hsv = HSVFilter.from_config(TissueFilterConfig())
    assert np.array_equal(TissueMask.from_slide(ref, hsv, 512).mask, TissueMask.from_slide(via_memory, hsv, 512).mask)


def test_level0_location_lands_on_the_wanted_level_pixel():
    for ds in (1.0, 2.000337154416723, 4.002024291497976, 2.0005055500659967, 3.0000001, 16.0):
        for v in range(0, 3000, 7):
            u = level0_for(v, ds)
            assert int(u / ds) == v and (u == 0 or int((u - 1) / ds) < v)


def test_outside_the_slide_is_white_for_every_backend(cmu_slide, bucket):
    for reader in (open_reader(cmu_slide), open_reader(f"{bucket[1]}/{cmu_slide.name}")):
        t = np.asarray(reader.read_region((2200, 2900), 0, (64, 96)))
        assert t.shape == (96, 64, 3)
        assert (t[-20:, -20:] == 255).all() and (t[:10, :10] != 255).any()


def test_remote_reads_go_through_the_block_cache(bucket):
    fs, root = bucket
    reader = open_reader(f"{root}/{SLIDES[0]}", ReaderOptions("auto", block_size=64 * 1024, cache_blocks=64))
    first = reader.file.fetches
    a = _rgb(reader, (500, 500), 0, (256, 256))
    after_read = reader.file.fetches
    assert after_read > first  # the read fetched blocks ...
    assert np.array_equal(a, _rgb(reader, (500, 500), 0, (256, 256)))
    assert reader.file.fetches == after_read  # ... and reading the same tile again fetched none
    assert after_read * 64 * 1024 < reader.file.size  # only the blocks of that tile, not the whole file


def test_reader_choice_and_errors(tmp_path, cmu_slide, bucket):
    assert choose_reader(cmu_slide) == "openslide"
    assert choose_reader(f"file://{cmu_slide}") == "openslide"
    assert choose_reader("s3://bucket/a.svs") == choose_reader("gs://b/a.svs") == "tiffslide"
    assert choose_reader(cmu_slide, "tiffslide") == "tiffslide"
    with pytest.raises(SlideError, match="not found.*missing.svs"):
        open_reader(f"{bucket[1]}/missing.svs")
    with pytest.raises(SlideError, match="openslide reads local files only.*tiffslide"):
        open_reader(f"{bucket[1]}/{SLIDES[0]}", ReaderOptions("openslide"))
    (tmp_path / "notes.svs").write_text("not a slide")
    with pytest.raises(SlideError, match="notes.svs.*tiffslide could not open"):
        open_reader(tmp_path / "notes.svs", TIFFSLIDE)
    with pytest.raises(Exception, match="reader"):
        load_config("smoke", ["data.reader=bioformats"])


def test_manifest_lists_remote_urls_without_touching_the_local_disk(tmp_path, cmu_slide, bucket):
    (tmp_path / "m.csv").write_text(f"path,cohort\ns3://lab-slides/x/a.svs,A\nfile://{cmu_slide},B\n")
    entries = load_manifest(tmp_path / "m.csv")
    assert entries[0].path == "s3://lab-slides/x/a.svs" and entries[0].slide_id == "a"
    assert entries[1].path == cmu_slide and entries[1].slide_id == cmu_slide.stem
    (tmp_path / "list.txt").write_text(f"# slides\n{bucket[1]}/{SLIDES[0]}\n\n{bucket[1]}/{SLIDES[2]}\n")
    assert [e.slide_id for e in load_manifest(tmp_path / "list.txt")] == [SLIDES[0][:-4], SLIDES[2][:-4]]


def test_remote_slide_that_disappears_mid_training_is_skipped_and_counted(tmp_path, bucket):
    fs, root = bucket
    d = load_config("smoke").data
    (tmp_path / "slides.txt").write_text(f"{root}/{SLIDES[0]}\n{root}/{SLIDES[1]}\n")
    entries = load_manifest(tmp_path / "slides.txt")
    # small blocks and cache: tiles at new places must fetch again, as from a real bucket
    options = ReaderOptions("auto", block_size=16 * 1024, cache_blocks=2)
    hsv = HSVFilter.from_config(d.tissue)
    sources = build_sources(entries, d.mpps, hsv, d.tissue.thumbnail_size, d.assume_mpp, options=options)
    sampler = TileSampler(sources, d.mpps, d.mpp_weights, d.tile_size, hsv, d.tissue.max_draws,
                          d.tissue.min_mask_overlap, options=options)
    rng = np.random.default_rng(0)
    for _ in range(4):
        sampler.sample(rng)
    assert len(sampler.cache) == 2  # both slides open, both read from
    fs.rm(f"{root[len('memory:/'):]}/{SLIDES[0]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tiles = [sampler.sample(rng)[0] for _ in range(30)]
    assert sampler.stats.skipped_slides == 1
    assert list(sampler.dropped) == [SLIDES[0][:-4]] and "unreadable" in sampler.dropped[SLIDES[0][:-4]]
    assert tiles[-1].slide_id == SLIDES[1][:-5]


@pytest.fixture(scope="module")
def dicom_slide(tmp_path_factory, cmu_slide):
    """A DICOM WSI made from the bundled one-level slide with wsidicomizer, losslessly re-encoded (~1 s)."""
    wsidicomizer = pytest.importorskip("wsidicomizer")
    from wsidicom.codec import JpegLosslessSettings
    from wsidicomizer.sources import TiffSlideSource

    out = tmp_path_factory.mktemp("dicom") / "CMU-1-Small-Region"
    wsidicomizer.WsiDicomizer.convert(cmu_slide, out, preferred_source=TiffSlideSource, include_label=False,
                                      include_overview=False, include_thumbnail=False, workers=1,
                                      encoding=JpegLosslessSettings(), force_transcoding=True)
    return out


def test_wsidicom_reads_a_dicom_wsi_made_from_a_bundled_slide(dicom_slide, cmu_slide):
    ref, dcm = open_reader(cmu_slide), open_reader(dicom_slide)
    assert dcm.backend == "wsidicom" and choose_reader(dicom_slide) == "wsidicom"
    assert SlideGeometry.of(dcm) == SlideGeometry.of(ref) and dcm.mpp == pytest.approx(ref.mpp)
    rng = np.random.default_rng(1)
    for _ in range(4):
        loc = (int(rng.integers(0, 2000)), int(rng.integers(0, 2700)))
        assert np.array_equal(_rgb(ref, loc, 0, (200, 200)), _rgb(dcm, loc, 0, (200, 200)))
    edge = np.asarray(dcm.read_region((2200, 2900), 0, (64, 96)))
    assert (edge[-20:, -20:] == 255).all()
    entries = load_manifest(dicom_slide.parent)
    assert [e.slide_id for e in entries] == ["CMU-1-Small-Region"] and entries[0].path == dicom_slide


def test_inspection_cache_spares_the_thumbnail_reads_of_a_second_run(tmp_path, wsi_dir):
    import os
    import shutil

    from pathfm.data.inspection_cache import InspectionCache, default_cache_dir

    folder = tmp_path / "slides"
    folder.mkdir()
    for name in SLIDES[1:]:
        shutil.copy(wsi_dir / name, folder / name)
    d = load_config("smoke").data
    hsv = HSVFilter.from_config(d.tissue)
    entries = load_manifest(folder)

    def sources(cache):
        return build_sources(entries, d.mpps, hsv, 256, 0.5, cache=cache)

    first = sources(InspectionCache(default_cache_dir(folder)))
    again = InspectionCache(default_cache_dir(folder))
    second = sources(again)
    assert again.hits == 2 and len(list((folder / ".pathfm-cache").glob("*.npz"))) == 2
    for a, b in zip(first, second):
        assert (a.mpp, a.mpp_source, a.geometry) == (b.mpp, b.mpp_source, b.geometry)
        assert np.array_equal(a.mask.mask, b.mask.mask) and a.mask.scale == b.mask.scale
    os.utime(folder / SLIDES[1], ns=(1, 1))  # the slide changed: measured again
    changed = InspectionCache(default_cache_dir(folder))
    sources(changed)
    assert changed.hits == 1
    (tmp_path / "a-file").write_text("x")  # a cache folder that cannot be created: no cache, no error
    broken = InspectionCache(tmp_path / "a-file" / "cache")
    assert len(sources(broken)) == 2 and broken.folder is None
