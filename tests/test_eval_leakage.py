"""Leakage audit: the run's recorded training slides against a task's slide / patient ids, on a manifest of the
bundled slides and task CSVs built to overlap (or not)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pathfm.cli import main
from pathfm.config import load_config
from pathfm.data.provenance import read_training_slides, training_entries, write_training_slides
from pathfm.records.run_folder import TRAINING_SLIDES_FILE
from pathfm.errors import PathfmError
from pathfm.eval.leakage import IdSets, audit_run, compare, id_sets, leakage_markdown, slide_key, tcga_patient


def test_ids_are_compared_by_slide_and_by_tcga_patient():
    assert tcga_patient("TCGA-CR-7395-01A-01-TS1") == "TCGA-CR-7395"
    assert tcga_patient("tcga-cr-7395") == "TCGA-CR-7395"
    assert tcga_patient("ADI-TCGA-ALPPQLSF") is None  # a Kather tile id, not a barcode
    assert slide_key("/data/x/TCGA-CR-7395-01A-01-TS1.svs") == slide_key("tcga-cr-7395-01a-01-ts1")
    train = id_sets(["TCGA-CR-7395-01A-01-TS1", "CMU-1-Small-Region"], ["TCGA-CR-7395", "CMU-1"])
    test = id_sets(["TCGA-CR-7395-01Z-00-DX1.svs", "TCGA-AA-0001-01A-01-TS1"], None)
    audit = compare(train, test, task="t", run="r")
    assert (audit.slide_overlap, audit.patient_overlap) == ([], ["TCGA-CR-7395"])  # another slide, same patient
    assert audit.leaked and "OVERLAP, 1 patient(s): TCGA-CR-7395" in audit.summary()
    clean = compare(train, id_sets(None, ["Case-3", "Case-4"]), task="osteo", run="r")
    assert not clean.leaked and clean.summary() == (
        "task osteo: no overlap (2 training patients vs 2 task patients/cases)")
    nothing = compare(train, IdSets(), task="crc", run="r")
    assert not nothing.auditable and "not auditable" in nothing.summary()


def _manifest(tmp_path: Path, wsi_dir: Path) -> Path:
    out = tmp_path / "manifest.csv"
    rows = [("CMU-1-Small-Region.svs", "CMU-1-Small-Region", "CMU-1"),
            ("TCGA-CR-7395-01A-01-TS1.svs", "TCGA-CR-7395-01A-01-TS1", "TCGA-CR-7395"),
            ("CMU-1-Small-Region.generic-tiled-pyramid.tiff", "pyramid", "CMU-1")]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "slide_id", "patient_id", "mpp"])
        for p, s, pt in rows:
            w.writerow([str(wsi_dir / p), s, pt, 0.5])
    return out


def _task_csv(path: Path, samples: Path, slides: list[str]) -> Path:
    """A 2-class task of real tiles, 5 per class, whose tile i comes from slides[i % len(slides)]."""
    tiles = sorted((samples / "crc_he_tiles" / "CRC-VAL-HE-7K" / "ADI").glob("*.jpg"))[:1] + sorted(
        (samples / "crc_he_tiles" / "CRC-VAL-HE-7K" / "TUM").glob("*.jpg"))[:1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "slide_id"])
        for i in range(10):
            w.writerow([str(tiles[i % 2]), ["ADI", "TUM"][i % 2], slides[i % len(slides)]])
    return path


def test_run_records_its_subset_and_the_audit_finds_the_planted_overlap(tmp_path, samples, wsi_dir, capsys):
    manifest = _manifest(tmp_path, wsi_dir)
    cfg = load_config("smoke", [f"data.slides={manifest}", "data.n_slides=2", "data.subset_seed=0"])
    run = tmp_path / "run"
    run.mkdir()
    write_training_slides(training_entries(cfg.data), run)
    trained = {r["slide_id"] for r in read_training_slides(run)}
    assert len(trained) == 2 and trained == {e.slide_id for e in training_entries(cfg.data)}
    held_out = ({"CMU-1-Small-Region", "TCGA-CR-7395-01A-01-TS1", "pyramid"} - trained).pop()

    leaky = _task_csv(tmp_path / "leaky.csv", samples, sorted(trained) + ["TCGA-ZZ-0001-01A-01-TS1"])
    clean = _task_csv(tmp_path / "clean.csv", samples, ["TCGA-ZZ-0001-01A-01-TS1", "TCGA-ZZ-0002-01A-01-TS1"])
    audit = audit_run(run, str(leaky))
    assert audit.slide_overlap == sorted(trained) and held_out not in audit.summary()
    assert not audit_run(run, str(clean)).leaked

    assert main(["audit", "leakage", str(run), "--task", str(clean)]) == 0
    assert "task clean: no overlap (2 training slides vs 2 task slides" in capsys.readouterr().out
    assert main(["audit", "leakage", str(run), "--task", str(clean), "--task", str(leaky)]) == 1
    out = capsys.readouterr().out
    assert f"task leaky: OVERLAP, 2 slide(s): {', '.join(sorted(trained))}" in out
    # a bundled task without ids says so; the report section lists every task
    text = leakage_markdown([run], ["crc", "crc@392px", "osteo[cls]", str(leaky)])
    assert "task crc: not auditable" in text and "task osteo: no overlap" in text and "OVERLAP" in text
    assert text.count("task crc:") == 1  # the option-tagged evaluation of crc is the same task


def test_a_run_without_the_record_gets_a_clear_error(tmp_path):
    with pytest.raises(PathfmError, match=TRAINING_SLIDES_FILE):
        audit_run(tmp_path, "osteo")
    assert "not available" in leakage_markdown([tmp_path], ["osteo"])
