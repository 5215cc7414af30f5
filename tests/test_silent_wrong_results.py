"""Bad inputs that used to go through silently with a wrong result (issue 25): each now stops with one clear
line naming the file, field or value and the fix (a resume that changes the config rewrites and records it).
Real files throughout: checkpoints written by pathfm's own writers, the bundled slides (truncated copies in
tmp_path), real SQLite storages for Optuna."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from pathfm.cli import main
from pathfm.config import load_config
from pathfm.errors import ConfigError, PathfmError, SlideError, SweepError


FAST = {"data.assume_mpp": 0.5, "optim.steps": 2, "optim.warmup_steps": 1, "run.checkpoint_every": 2,
        "data.batch_size": 4, "data.crops.n_local": 2, "data.n_slides": 1, "data.tissue.thumbnail_size": 256,
        "optim.teacher_temp_warmup_steps": 1, "optim.freeze_last_layer_steps": 0}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------ 1. weight files are checksummed
def _flip_weights(path: Path) -> None:
    """Overwrite 64 bytes in the middle of the largest tensor of a torch zip file with 0x7f (floats of
    3.4e38): the zip structure stays intact, so torch.load reads the file without complaint."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        f.write(b"\x7f" * 64)


def _pico_checkpoint(run: Path) -> Path:
    """A training checkpoint as pathfm's checkpoint writer writes it (the parts export reads)."""
    from pathfm.backbone import checkpoint as ckpt
    from pathfm.backbone.vit import build_backbone

    cfg = load_config("smoke")
    torch.manual_seed(0)
    model = build_backbone(cfg.model)
    dump = cfg.model.model_dump(mode="json")
    payload = {"config": cfg.model_dump(mode="json"), "model": dump, "backbone_model": dump, "stage": "main",
               "teacher": {"backbone": model.state_dict()}, "student": {}, "optimizer": {}}
    return ckpt.save_checkpoint(run, 10, payload, keep=2)


def test_export_of_a_checkpoint_with_flipped_bytes_is_refused(tmp_path, capsys):
    path = _pico_checkpoint(tmp_path / "run")
    _flip_weights(path)
    torch.load(path, map_location="cpu", weights_only=True)  # the damage is invisible to torch
    out = tmp_path / "out"
    assert main(["export", str(path), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert str(path) in line and "sha256" in line and "step_00000010.pt.sha256" in line
    assert not (out / "teacher_backbone.pt").exists()


def test_teacher_backbone_has_a_checksum_that_eval_eva_init_from_and_export_check(tmp_path, make_pico_run, capsys):
    from pathfm.backbone.foreign_weights import read_weights_file
    from pathfm.eval.sources import load_source
    from pathfm.io import checksum_path, sha256_file

    run = make_pico_run("flipped", 5)
    file = run / "teacher_backbone.pt"
    assert checksum_path(file).read_text().split()[0] == sha256_file(file)
    _flip_weights(file)
    for read in (load_source, read_weights_file):  # eval and eva read through load_source; init_from this
        with pytest.raises(PathfmError, match=r"teacher_backbone\.pt.*sha256"):
            read(file)
    assert main(["export", str(file), "--out", str(tmp_path / "out")]) == 2
    assert "teacher_backbone.pt.sha256" in _one_line_error(capsys)
    assert main(["eval", str(file), "--task", "crc", "--no-progress"]) == 2
    assert "corrupt" in _one_line_error(capsys)


def test_a_file_without_checksum_is_read_with_a_warning(make_pico_run):
    from pathfm.eval.sources import load_source
    from pathfm.io import checksum_path

    run = make_pico_run("old", 5)
    checksum_path(run / "teacher_backbone.pt").unlink()  # as written by a pathfm before checksums
    with pytest.warns(UserWarning, match=r"teacher_backbone\.pt: no teacher_backbone\.pt\.sha256"):
        assert load_source(run).step == 5


def test_every_export_format_writes_checksummed_weights_that_readers_verify(make_pico_run, tmp_path):
    from pathfm.backbone.foreign_weights import read_weights_file
    from pathfm.eval.sources import load_source
    from pathfm.export.run import export_run
    from pathfm.io import checksum_path, sha256_file

    run = make_pico_run("formats", 5)
    weights = {}
    for fmt in ("pathfm", "dinov2", "timm"):
        res = export_run(run / "teacher_backbone.pt", fmt, tmp_path / fmt)
        weights[fmt] = next(f for f in res.files if f.suffix in (".pt", ".pth", ".safetensors"))
        assert checksum_path(weights[fmt]).read_text().split()[0] == sha256_file(weights[fmt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified: no warning
        read_weights_file(weights["dinov2"])
        load_source(weights["pathfm"])
    data = bytearray(weights["timm"].read_bytes())
    data[-100:-36] = b"\x7f" * 64
    weights["timm"].write_bytes(bytes(data))
    with pytest.raises(PathfmError, match=r"model\.safetensors.*sha256"):
        load_source(f"timm:{res.name}:{weights['timm']}")


# ----------------------------------------------------------- 2. a changed spec does not join an Optuna study
def _optuna_spec(name: str, steps: int, space: dict) -> dict:
    return {"name": name, "overrides": dict(FAST, **{"optim.steps": steps}), "space": space,
            "objective": {"metric": "loss", "mode": "min"}, "eval": {"enabled": False}, "report_every": 1,
            "search": {"algorithm": "optuna", "num_samples": 1, "seed": 0}}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_optuna_refuses_to_join_a_study_with_another_spec(tmp_path, capsys):
    import optuna
    import yaml

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    spec1 = tmp_path / "spec1.yaml"
    spec1.write_text(yaml.safe_dump(_optuna_spec("study", 2, {"kde_weight": {"loguniform": [1e-3, 0.5]}})))
    spec2 = tmp_path / "spec2.yaml"
    spec2.write_text(yaml.safe_dump(_optuna_spec("study", 3, {"hed_strength": {"uniform": [0.0, 0.1]}})))
    dirs = tmp_path / "sweeps"
    assert main(["sweep", "optuna", str(spec1), "--storage", storage, "--dir", str(dirs)]) == 0
    capsys.readouterr()
    saved = (dirs / "study" / "sweep_spec.yaml").read_text()
    # the same folder: refused, nothing overwritten, no trial added
    assert main(["sweep", "optuna", str(spec2), "--storage", storage, "--dir", str(dirs)]) == 2
    line = _one_line_error(capsys)
    assert "optim.steps" in line and "space" in line and "name:" in line and "--dir" in line
    assert (dirs / "study" / "sweep_spec.yaml").read_text() == saved
    assert len(optuna.load_study(study_name="study", storage=storage).trials) == 1
    # another folder on the same storage: the study in the storage still belongs to spec1
    assert main(["sweep", "optuna", str(spec2), "--storage", storage, "--dir", str(tmp_path / "other")]) == 2
    assert "name:" in _one_line_error(capsys)
    assert len(optuna.load_study(study_name="study", storage=storage).trials) == 1
    # what the message says works: a new name forks a new study on the same storage
    spec2.write_text(spec2.read_text().replace("name: study", "name: study-2"))
    assert main(["sweep", "optuna", str(spec2), "--storage", storage, "--dir", str(dirs)]) == 0
    assert len(optuna.load_study(study_name="study-2", storage=storage).trials) == 1


# ---------------------------------------------------- 3. a missing config path is not a bundled preset
def test_a_config_path_that_does_not_exist_is_an_error_not_a_preset(tmp_path, monkeypatch, capsys):
    for missing in ("/no/such/dir/cpu.yaml", "no/such/dir/cpu.yaml", "cpu.yaml", "smoke.yml"):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError, match=f"'{missing}'.*does not exist"):
            load_config(missing)
    assert main(["train", "/no/such/dir/cpu.yaml", "--dry-run"]) == 2
    assert "/no/such/dir/cpu.yaml" in _one_line_error(capsys)
    assert load_config("cpu").optim.steps == load_config("configs/cpu.yaml").optim.steps  # names, repo paths


# -------------------------------------------------- 4. resume with overrides rewrites the run's config.yaml
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_with_overrides_rewrites_config_yaml_and_records_the_change(tmp_path, capsys):
    run = tmp_path / "run"
    items = [f"{k}={json.dumps(v)}" for k, v in FAST.items()]
    assert main(["train", "--run-dir", str(run), "smoke", *items]) == 0
    assert load_config(run / "config.yaml").optim.steps == 2
    assert main(["train", f"resume={run}", "optim.steps=3"]) == 0
    assert load_config(run / "config.yaml").optim.steps == 3
    changes = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert changes[-1]["step"] == 2 and changes[-1]["changed"] == {"optim.steps": [2, 3]}
    assert "optim.steps: 2 -> 3" in capsys.readouterr().err


# -------------------------------------------------------------- 5. run.name stays inside run.output_dir
@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/../../b"])
def test_a_run_name_that_leaves_the_output_dir_is_refused(name, capsys):
    with pytest.raises(ConfigError, match="run.name"):
        load_config("smoke", [f"run.name={name}"])
    assert main(["train", "smoke", f"run.name={name}", "--dry-run"]) == 2
    line = _one_line_error(capsys)
    assert "run.name" in line and name in line and "run.output_dir" in line
    assert load_config("smoke", ["run.name=study/arm1"]).run.name == "study/arm1"  # a sub-folder stays inside


# ----------------------------------------------------------------------------- 6. an empty config file
@pytest.mark.parametrize("text", ["", "# nothing set yet\n"])
def test_an_empty_config_file_is_refused(tmp_path, text, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mine.yaml.*empty"):
        load_config(path)
    assert main(["train", str(path), "--dry-run"]) == 2
    assert str(path) in _one_line_error(capsys)
    path.write_text("{}\n")  # all defaults, said explicitly
    assert load_config(path).model.arch == "vit_small"


# ---------------------------------------------------------- 7. an Optuna search over nothing is refused
def test_optuna_with_an_empty_search_space_is_refused_before_any_trial(tmp_path, capsys):
    import yaml

    from pathfm.sweeps.runner import run_sweep
    from pathfm.sweeps.spec import check_search_space, load_spec

    spec = _optuna_spec("nothing", 2, {"kde_weight": {"constant": 0.1}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", "optuna", str(path), "--dir", str(tmp_path / "sweeps")]) == 2
    line = _one_line_error(capsys)
    assert "space" in line and "sweep run" in line and "seeds" in line
    assert not (tmp_path / "sweeps" / "nothing").exists()
    with pytest.raises(SweepError, match="space"):  # the Ray sweep too, before Ray starts
        run_sweep(path, storage=tmp_path / "ray", dry_run=True)
    spec["seeds"] = [0, 1]  # something varies: accepted
    path.write_text(yaml.safe_dump(spec))
    check_search_space(load_spec(path))


# ------------------------------------------------------- 8. a failed slide read says why (cause-dependent)
def _truncated(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_a_truncated_slide_is_called_truncated_not_unsupported(tmp_path, cmu_slide, pyramid_slide, reader):
    from pathfm.data.readers import ReaderOptions, open_reader

    if reader == "tiffslide":
        pytest.importorskip("tiffslide")
    for src in (cmu_slide, pyramid_slide):
        for fraction in (0.5, 0.9):
            bad = _truncated(src, tmp_path / f"{fraction}-{src.name}", fraction)
            with pytest.raises(SlideError) as e:
                open_reader(bad, ReaderOptions(reader=reader))
            msg = str(e.value)
            assert str(bad) in msg and "truncated" in msg and "convert" not in msg and "\n" not in msg, msg
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        open_reader(empty, ReaderOptions(reader=reader))


def test_a_format_openslide_cannot_read_but_tiffslide_can_names_tiffslide(tmp_path, bad_tiff, cmu_slide):
    import numpy as np
    import openslide
    import tifffile

    pytest.importorskip("tiffslide")
    from pathfm.data.readers import ReaderOptions, open_reader

    with openslide.OpenSlide(str(cmu_slide)) as s:
        pixels = np.asarray(s.read_region((0, 0), 0, (512, 384)).convert("RGB"))
    ome = tmp_path / "region.ome.tif"
    tifffile.imwrite(ome, pixels, photometric="rgb", metadata={"axes": "YXS"})  # a strip OME-TIFF
    assert tifffile.TiffFile(ome).is_ome
    for path in (bad_tiff, ome):
        with pytest.raises(SlideError) as e:
            open_reader(path)
        msg = str(e.value)
        assert str(path) in msg and "data.reader=tiffslide" in msg and "--reader tiffslide" in msg, msg
        assert "convert" not in msg and "truncated" not in msg
        assert open_reader(path, ReaderOptions(reader="tiffslide")).dimensions[0] > 0  # and it does read it
    junk = tmp_path / "notes.svs"
    junk.write_text("not a slide at all\n" * 100)
    with pytest.raises(SlideError, match="convert"):  # no reader opens it: the conversion advice stays
        open_reader(junk)


def test_data_scan_reports_the_truncated_slide_as_truncated(tmp_path, cmu_slide, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    bad = _truncated(cmu_slide, folder / "cut.svs", 0.5)
    shutil.copy(cmu_slide, folder / "good.svs")
    assert main(["data", "scan", str(folder), "--out", str(tmp_path / "m.csv"), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "convert it" not in err, err
