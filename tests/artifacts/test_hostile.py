"""Hostile and broken artifacts fail with a readable reason, before uv runs and without writing outside."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest

from hangar.artifacts.api import BuildError
from hangar.artifacts.limits import MAX_UNPACKED_BYTES, MAX_ZIPPED_BYTES
from hangar.artifacts.runtimes import PYTHON_RUNTIMES, available_runtimes
from tests.artifacts.conftest import Artifacts


def refused(artifacts: Artifacts, prefix: str, match: str, entry: tuple[str, ...] = ("main.py",)) -> None:
    with pytest.raises(BuildError, match=match):
        artifacts.builder.prepare(artifacts.artifact(prefix, entry=entry))
    versions = artifacts.builder.versions_dir
    leftovers = list(versions.iterdir()) if versions.exists() else []
    assert leftovers == [], f"a refused artifact left {leftovers}"


def test_zip_slip_is_refused(artifacts: Artifacts, tmp_path: Path) -> None:
    artifacts.zip("slip.zip", {"main.py": "", "../../../../escaped.py": "owned"})
    refused(artifacts, "slip.zip", "zip slip")
    assert not list(tmp_path.rglob("escaped.py")) and not (tmp_path.parent / "escaped.py").exists()


def test_absolute_member_names_are_refused(artifacts: Artifacts) -> None:
    artifacts.zip("absolute.zip", {"main.py": "", "/etc/hangar-owned": "x"})
    refused(artifacts, "absolute.zip", "absolute or unsafe name")


def test_symlink_out_of_a_zip_is_refused(artifacts: Artifacts) -> None:
    artifacts.zip("link.zip", {"main.py": ""}, links={"passwd": "../../../etc/passwd"})
    refused(artifacts, "link.zip", "symbolic link passwd points outside")


def test_symlink_chain_that_escapes_only_on_disk_is_refused(artifacts: Artifacts) -> None:
    """Each link looks inside on paper (``y -> .``, ``x -> y/..``); resolved for real, x is the parent dir."""
    artifacts.zip("chain.zip", {"main.py": ""}, links={"y": ".", "x": "y/.."})
    refused(artifacts, "chain.zip", "symbolic link x points outside")


def test_file_below_a_symlink_is_refused(artifacts: Artifacts) -> None:
    artifacts.zip("through.zip", {"main.py": "", "inner/evil.py": "x"}, links={"inner": "."})
    refused(artifacts, "through.zip", "lies below the link inner")


def test_symlink_out_of_a_folder_is_refused(artifacts: Artifacts) -> None:
    root = artifacts.folder("linked", {"main.py": ""})
    os.symlink("/etc/passwd", root / "passwd")
    refused(artifacts, "linked", "symbolic link passwd points outside")


def test_zip_bomb_ratio_is_refused(artifacts: Artifacts) -> None:
    artifacts.zip("bomb.zip", {"main.py": "", "zeros.bin": b"\0" * (32 * 1024 * 1024)})
    assert (artifacts.store.root / "hangar-artifacts" / "bomb.zip").stat().st_size < 1024 * 1024
    refused(artifacts, "bomb.zip", "looks like a zip bomb")


def test_declared_unpacked_size_over_the_limit_is_refused_before_reading(artifacts: Artifacts) -> None:
    path = artifacts.zip("huge.zip", {"main.py": "", "big.bin": b"x" * 1000})
    _declare_size(path, "big.bin", MAX_UNPACKED_BYTES + 1)
    refused(artifacts, "huge.zip", "unpacks to 750.0 MB or more; the limit is 750 MB")


def test_member_longer_than_declared_is_refused(artifacts: Artifacts) -> None:
    """A header that understates a member's size must not let more bytes through (CRC/size mismatch)."""
    path = artifacts.zip("liar.zip", {"main.py": "", "big.bin": b"y" * 100_000})
    _declare_size(path, "big.bin", 10)
    refused(artifacts, "liar.zip", "cannot be unpacked|Bad CRC|BadZipFile")


def test_zip_over_250_mb_is_refused_without_reading_it(artifacts: Artifacts) -> None:
    path = artifacts.store.root / "hangar-artifacts" / "large.zip"
    with path.open("wb") as handle:
        handle.truncate(MAX_ZIPPED_BYTES + 1)  # sparse: costs no disk
    refused(artifacts, "large.zip", "250.0 MB zipped; the limit is 250 MB")


def test_missing_entry_point_is_refused_before_building(artifacts: Artifacts) -> None:
    artifacts.folder("no-main", {"app.py": "", "requirements.txt": "hangar-no-such-package-zq9\n"})
    refused(artifacts, "no-main", "entryPoint file 'main.py' is not in the code artifact")
    refused(artifacts, "no-main", "entryPoint file 'run.py' is not in the code artifact", entry=("uvicorn", "run.py"))
    refused(artifacts, "no-main", "entryPoint must be a list of 1 or 2", entry=("a.py", "b.py", "c.py"))


def test_missing_artifact_and_unavailable_runtime(artifacts: Artifacts) -> None:
    refused(artifacts, "nothing/here.zip", "No artifact at s3://hangar-artifacts/nothing/here.zip")
    artifacts.folder("ok", {"main.py": ""})
    absent = next(runtime for runtime in PYTHON_RUNTIMES if runtime not in available_runtimes())
    with pytest.raises(BuildError, match=rf"runtime {absent} is not available on this host; available: .*PYTHON_3_11"):
        artifacts.builder.prepare(artifacts.artifact("ok", runtime=absent))
    with pytest.raises(BuildError, match="NODE_22 is not supported"):
        artifacts.builder.prepare(artifacts.artifact("ok", runtime="NODE_22"))


def test_not_a_zip(artifacts: Artifacts) -> None:
    path = artifacts.store.root / "hangar-artifacts" / "notes.zip"
    path.write_text("not a zip")
    refused(artifacts, "notes.zip", "is not a readable zip file")


def _declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size of ``member`` in the zip's central directory (what readers trust)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    offset = data.find(b"PK\x01\x02")  # central directory entries: size at +24, name length at +28, name at +46
    while offset != -1:
        name_length = struct.unpack_from("<H", data, offset + 28)[0]
        if data[offset + 46 : offset + 46 + name_length].decode() == info.filename:
            break
        offset = data.find(b"PK\x01\x02", offset + 4)
    if offset == -1:
        raise LookupError(member)
    struct.pack_into("<I", data, offset + 24, size)
    path.write_bytes(bytes(data))
