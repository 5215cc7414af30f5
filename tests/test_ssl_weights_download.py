"""`pathfm weights fetch`: checksum verification and the offline error, on local files only (no network)."""

from __future__ import annotations

import hashlib

import pytest

from ports import free_port
from pathfm.backbone import weights_download as wd
from pathfm.backbone.foreign_weights import resolve_weights_source
from pathfm.cli import main
from pathfm.errors import ConfigError
from pathfm.io import sha256_file


@pytest.fixture()
def release(tmp_path):
    """A stand-in release file (random bytes over two download chunks) and its sha256."""
    src = tmp_path / "mirror" / "dinov2_vits14_pretrain.pth"
    src.parent.mkdir()
    data = bytes(range(256)) * (wd.CHUNK // 128 + 3)
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest()


def test_a_checksum_mismatch_is_named(release):
    src, digest = release
    assert sha256_file(src) == digest
    wd.verify_sha256(src, digest.upper())
    with pytest.raises(ConfigError, match=f"{src.name}: sha256 {digest} does not match the pinned 0+"):
        wd.verify_sha256(src, "0" * 64)


def test_fetch_verifies_renames_and_then_finds_the_file(release, tmp_path, monkeypatch):
    src, digest = release
    dest = tmp_path / "weights"
    monkeypatch.setenv("PATHFM_WEIGHTS_DIR", str(dest))
    with pytest.raises(ConfigError, match="not the pinned .*nothing was written"):
        wd.fetch_dinov2("dinov2:vits14", url=src.as_uri())  # the real pin: this stand-in file is not the release
    assert not list(dest.iterdir())  # no .part left behind
    got = wd.fetch_dinov2("dinov2:vits14", sha256=digest, url=src.as_uri())
    assert got == dest / "dinov2_vits14_pretrain.pth" and got.read_bytes() == src.read_bytes()
    assert resolve_weights_source("dinov2:vits14") == got  # model.init_from finds it
    assert wd.fetch_dinov2("dinov2:vits14", sha256=digest, url="http://127.0.0.1:1/never") == got  # verified, not fetched
    got.write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="delete it and fetch it again"):
        wd.fetch_dinov2("dinov2:vits14", sha256=digest)


def test_offline_error_names_the_file_and_where_to_put_it(tmp_path):
    port = free_port()  # a local port nobody listens on: the connection is refused, as offline
    with pytest.raises(ConfigError, match=r"could not download http://127.0.0.1:\d+/x .*copy it to .*"
                                          r"dinov2_vitg14_pretrain.pth.*fetch dinov2:vitg14 --dir "):
        wd.fetch_dinov2("dinov2:vitg14", tmp_path, url=f"http://127.0.0.1:{port}/x", timeout_s=5)
    assert not list(tmp_path.iterdir())


def test_names_pins_and_cli_errors(tmp_path, capsys, monkeypatch):
    assert set(wd.DINOV2_SHA256) <= set(wd.DINOV2_NAMES) and all(len(h) == 64 for h in wd.DINOV2_SHA256.values())
    assert wd.dinov2_url("vitg14_reg4").endswith("/dinov2_vitg14/dinov2_vitg14_reg4_pretrain.pth")
    with pytest.raises(ConfigError, match="no pinned sha256 .*--sha256"):
        wd.fetch_dinov2("dinov2:vitl14_reg4", tmp_path)
    with pytest.raises(ConfigError, match="unknown DINOv2 model"):
        wd.fetch_dinov2("dinov2:vitx14", tmp_path)
    assert main(["weights", "fetch", "dinov2:vitb14", "--dir", str(tmp_path), "--sha256", "abc"]) == 2
    assert "expected 64 hex digits" in capsys.readouterr().err
    monkeypatch.setenv("PATHFM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(ConfigError, match="pathfm weights fetch dinov2:vitg14"):
        resolve_weights_source("dinov2:vitg14")
