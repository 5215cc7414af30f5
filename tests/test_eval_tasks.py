"""Evaluation tasks on the bundled real tiles: loading, folds (grouped by case), checksums, a baseline
score, and bad input."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from pathfm.eval.evaluation import probe_rows
from pathfm.eval.features import color_histogram_features
from pathfm.eval.tasks import TaskError, get_task, known_tasks, make_folds
from pathfm.eval.tiles import load_samples


def test_bundled_tasks_load():
    crc = get_task("crc")
    assert len(crc) == 108 and crc.n_classes == 8 and "BACK" not in crc.class_names
    osteo = get_task("osteo")
    assert len(osteo) == 60 and osteo.class_names == ("Non-Tumor", "Non-Viable-Tumor", "Viable")
    assert sorted(set(osteo.groups.tolist())) == ["Case-3", "Case-4", "Case-48", "P9"]
    assert set(known_tasks()) == {"crc", "crc9", "crc_crops", "osteo", "pcam", "pcam_train"}


def test_crc9_adds_the_lossless_tiles_without_duplicates():
    crc, crc9 = get_task("crc"), get_task("crc9")
    counts = dict(zip(crc9.class_names, np.bincount(crc9.labels).tolist()))
    assert counts == {"ADI": 27, "BACK": 13, "DEB": 16, "LYM": 26, "MUC": 26, "MUS": 26, "NORM": 24, "STR": 27,
                      "TUM": 27}
    ids = [p.stem for p in crc9.paths]
    assert len(set(ids)) == len(ids) == 212  # a source tile bundled twice (lossy + lossless) is kept once
    assert set(crc.paths) < set(crc9.paths)  # crc9 is crc plus tiles; crc itself is unchanged
    for _, te in make_folds(crc9.labels, None, 5, 0):
        assert len(set(crc9.labels[te].tolist())) == 9  # BACK is in every test fold


def test_pcam_fixed_split_is_balanced_and_disjoint():
    pcam = get_task("pcam")
    assert pcam.class_names == ("normal", "tumor") and pcam.spec.input_size % 14 == 0
    for part, mask, n in (("train", ~pcam.is_test, 200), ("test", pcam.is_test, 400)):
        assert np.bincount(pcam.labels[mask]).tolist() == [n, n]
        assert {p.relative_to(pcam.spec.root).parts[0] for p in np.array(pcam.paths)[mask]} == {part}
    smp = load_samples(pcam)
    assert smp.images.shape == (1200, 98, 98, 3)


@pytest.mark.parametrize("folder", ["pcam", "crc_he_tiles"])
def test_bundled_tiles_match_their_checksums(samples, folder):
    root = samples / folder
    listed = dict(line.split("  ", 1)[::-1] for line in (root / "SHA256SUMS").read_text().splitlines())
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == on_disk
    bad = [f for f, digest in listed.items() if hashlib.sha256((root / f).read_bytes()).hexdigest() != digest]
    assert not bad, f"changed since bundled: {bad[:5]}"


def test_color_histogram_baseline_on_pcam_is_above_chance_with_a_small_standard_error():
    """The same code path as ``evaluate``'s colour baseline. Measured: linear 0.800, kNN 0.762 balanced
    accuracy on the 800 test tiles (binomial SE 0.014); chance is 0.5."""
    smp = load_samples(get_task("pcam"))
    rows = probe_rows({"color_histogram": color_histogram_features(smp.images)}, smp, ["linear", "knn"], [0],
                      source="test", step=0)
    score = {r["probe"]: r["value"] for r in rows if r["metric"] == "balanced_accuracy"}
    assert 0.77 <= score["linear"] <= 0.83 and 0.73 <= score["knn"] <= 0.79, score
    assert {r["n_test"] for r in rows} == {800}  # binomial SE <= sqrt(0.25 / 800) = 0.018, 0.014 at 0.80


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_grouped_folds_never_split_a_case(seed):
    smp = load_samples(get_task("osteo"))
    groups = smp.sample_groups()
    folds = smp.folds(seed)
    assert len(folds) == 4
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(smp)))  # every tile tested exactly once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te]), "a case is split between train and test"
        assert set(smp.labels[tr].tolist()) == {0, 1, 2}  # every class is learnable in every fold


def test_stratified_folds_cover_every_class_and_crops_stay_with_their_tile():
    smp = load_samples(get_task("crc_crops"))
    assert len(smp) == 4 * 108 and smp.images.shape[1:] == (112, 112, 3)
    for tr, te in smp.folds(0):
        assert not set(smp.tile[tr].tolist()) & set(smp.tile[te].tolist())
        assert len(set(smp.labels[te].tolist())) == 8
    # the crops tile the 224 px image exactly
    whole = load_samples(get_task("crc")).images[0]
    crops = smp.images[:4]
    top, bottom = np.concatenate(crops[:2], axis=1), np.concatenate(crops[2:], axis=1)
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=0), whole)


def test_folds_are_seeded():
    y = np.repeat(np.arange(3), 10)
    a, b = make_folds(y, None, 5, 3), make_folds(y, None, 5, 3)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))
    c = make_folds(y, None, 5, 4)
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(TaskError, match=r"unknown task 'ccr'.*crc.*osteo"):
        get_task("ccr")


def _folder_task(tmp_path, samples, per_class=5):
    src = samples / "crc_he_tiles" / "CRC-VAL-HE-7K"
    for cls in ("ADI", "TUM"):
        (tmp_path / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:per_class]:
            shutil.copy(f, tmp_path / cls / f.name)
    spec = tmp_path.parent / f"{tmp_path.name}.yaml"
    spec.write_text(f"name: mini\nroot: {tmp_path.name}\nn_folds: 3\ninput_size: 112\n")
    return spec


def test_user_task_from_yaml_folder_per_class(tmp_path, samples):
    spec = _folder_task(tmp_path / "tiles", samples)
    task = get_task(str(spec))
    assert task.name == "mini" and task.class_names == ("ADI", "TUM") and len(task) == 10
    assert load_samples(task).images.shape == (10, 112, 112, 3)


def test_empty_class_folder(tmp_path, samples):
    spec = _folder_task(tmp_path / "tiles", samples)
    (tmp_path / "tiles" / "MUC").mkdir()
    with pytest.raises(TaskError, match=r"class folder .*MUC is empty"):
        get_task(str(spec))


def test_unreadable_image_is_named(tmp_path, samples):
    spec = _folder_task(tmp_path / "tiles", samples)
    bad = tmp_path / "tiles" / "TUM" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    task = get_task(str(spec))
    with pytest.raises(TaskError, match=r"cannot read tile .*broken\.png"):
        load_samples(task)


def test_class_with_fewer_samples_than_folds(tmp_path, samples):
    spec = _folder_task(tmp_path / "tiles", samples, per_class=2)
    with pytest.raises(TaskError, match=r"ADI \(2\), TUM \(2\) have fewer tiles than the 3 folds"):
        get_task(str(spec))
    with pytest.raises(TaskError, match=r"BACK \(1\) have fewer tiles than the 5 folds"):
        get_task(str(_crc_with_back(tmp_path)))  # the bundled CRC without its BACK exclusion


def _crc_with_back(tmp_path):
    from pathfm.config import SAMPLES_DIR

    p = tmp_path / "crc_all.yaml"
    p.write_text(f"name: crc_all\nroot: {SAMPLES_DIR / 'crc_he_tiles'}\nlabels: labels.csv\n")
    return p


def test_too_few_groups_and_bad_task_files(tmp_path):
    with pytest.raises(TaskError, match=r"4 groups .* cannot fill 5 folds"):
        get_task("osteo", n_folds=5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nroot: .\nsplit: group_kfold\n")
    with pytest.raises(TaskError, match=r"group_kfold needs group_column"):
        get_task(str(bad))
    csv = tmp_path / "t.csv"
    csv.write_text("file,label\na.png,x\n")
    with pytest.raises(TaskError, match=r"missing column\(s\) \['path'\]"):
        get_task(str(csv))
    with pytest.raises(TaskError, match="does not exist"):
        get_task(str(tmp_path / "nope.yaml"))


def test_fixed_split_from_a_csv_column(tmp_path, samples):
    import csv

    src = samples / "osteosarcoma"
    rows = list(csv.DictReader(open(src / "labels.csv")))
    out = tmp_path / "fixed.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for i, r in enumerate(rows):
            w.writerow([src / r["path"], r["label"], "test" if i % 4 == 0 else "train"])
    spec = tmp_path / "fixed.yaml"
    spec.write_text(f"name: fixed\nroot: {tmp_path}\nlabels: fixed.csv\nsplit: fixed\nsplit_column: split\n")
    smp = load_samples(get_task(str(spec)))
    (fold,) = smp.folds(0)
    assert len(fold[1]) == 15 and len(fold[0]) == 45 and not set(fold[0]) & set(fold[1])
