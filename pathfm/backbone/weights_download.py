"""Fetch the official ImageNet DINOv2 backbones (``dinov2:NAME``) into ``$PATHFM_WEIGHTS_DIR`` (else torch hub's
cache), verified against a pinned sha256: ``pathfm weights fetch dinov2:vitg14``.

Meta publishes no checksums for ``dl.fbaipublicfiles.com/dinov2``; the pins below are the sha256 values that
public lock files of independent projects record for these exact file names (found by their file name in
public source; not re-computed here, this machine has no network). A name without a pin is fetched only
with ``--sha256 HEX`` given by the user. Training never downloads (``model.init_from`` only looks the file
up, :func:`pathfm.backbone.foreign_weights.resolve_weights_source`): a 4.5 GB file fetched by every DDP rank
at once is the wrong default.

The download streams into a temporary file next to the target while hashing, and only a file whose digest matches is renamed
into place; a file already there is verified instead of fetched again.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from pathfm.backbone.foreign_weights import DINOV2_NAMES, DINOV2_URL, dinov2_file_name, weights_search_dirs
from pathfm.errors import ConfigError
from pathfm.io import atomic_path, sha256_file

DINOV2_SHA256 = {
    "vits14": "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9",
    "vitb14": "0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73",
    "vitl14": "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
    "vitg14": "baf8467e50af277596bbbafa06887c177ee899ab46033649c383577d7e9309d3",
    "vits14_reg4": "f433177089a681826f849f194ece3bb48f4d63fb38d32fc837e3dc7a4e5641fb",
}
CHUNK = 1 << 20


def verify_sha256(path: str | Path, expected: str) -> None:
    """ConfigError naming the file, both digests and the fix unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ConfigError(f"{path}: sha256 {actual} does not match the pinned {expected}; the file is corrupt, "
                          "truncated or a different release: delete it and fetch it again")


def dinov2_url(name: str) -> str:
    return DINOV2_URL.format(arch=name.removesuffix("_reg4"), name=name)


def parse_dinov2_name(source: str) -> str:
    name = source.removeprefix("dinov2:")
    if name not in DINOV2_NAMES:
        raise ConfigError(f"{source}: unknown DINOv2 model; choose dinov2:{' / dinov2:'.join(DINOV2_NAMES)}")
    return name


def fetch_dinov2(source: str, dest_dir: str | Path | None = None, sha256: str | None = None,
                 url: str | None = None, timeout_s: float = 60.0) -> Path:
    """The verified file of ``dinov2:NAME`` in ``dest_dir`` (default: ``$PATHFM_WEIGHTS_DIR``, else torch hub's
    cache), downloaded from ``url`` (default: the official address) unless it is there already."""
    name = parse_dinov2_name(source)
    expected = (sha256 or DINOV2_SHA256.get(name) or "").lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"dinov2:{name}: no pinned sha256 (pinned: {', '.join(sorted(DINOV2_SHA256))}); pass "
                          "--sha256 HEX (64 hex digits) from a source you trust" if sha256 is None else
                          f"--sha256 {sha256}: expected 64 hex digits")
    folder = Path(dest_dir).expanduser() if dest_dir is not None else weights_search_dirs()[0]
    target = folder / dinov2_file_name(name)
    if target.is_file():
        verify_sha256(target, expected)
        return target
    url = url or dinov2_url(name)
    dir_flag = f" --dir {folder}" if dest_dir is not None else ""
    try:
        with atomic_path(target) as part:  # removed unless the block completes: no partial file is ever left
            digest = hashlib.sha256()
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise ConfigError(
                    f"dinov2:{name}: could not download {url} ({e}); without network, download it elsewhere and copy "
                    f"it to {target} (or to the folder named by $PATHFM_WEIGHTS_DIR), then run "
                    f"`pathfm weights fetch dinov2:{name}{dir_flag}` to verify it") from None
            if digest.hexdigest() != expected:
                raise ConfigError(f"dinov2:{name}: {url} has sha256 {digest.hexdigest()}, not the pinned {expected}; "
                                  "nothing was written")
    except OSError as e:
        raise ConfigError(f"dinov2:{name}: cannot write {target} ({e}); choose a writable --dir") from None
    return target
