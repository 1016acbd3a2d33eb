"""Hostile images, built byte by byte: each is refused at push or ends CREATE_FAILED with a clear reason (or, where
an image builder would legitimately produce the same thing, is made harmless), nothing lands outside the store,
and the server stays healthy."""

from __future__ import annotations

import gzip
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images.conftest import create_image_runtime, ecr_host, new_repository
from tests.support.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Entry,
    Image,
    RegistryClient,
    digest_of,
    image,
)
from tests.support.server import HangarServer

BUSY = Entry("bin/agent", data=b"#!/bin/sh\necho hi\n", mode=0o755)


@pytest.fixture(scope="module")
def repo(ecr: Any) -> str:
    return new_repository(ecr, "hostile")


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A host directory a hostile layer aims at; it must stay empty."""
    target = Path(f"/tmp/hangar-escape-{uuid.uuid4().hex[:8]}")
    target.mkdir()
    yield target
    assert sorted(p.name for p in target.iterdir()) == [], "a layer wrote outside the store"
    target.rmdir()


def deploy(hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, img: Image) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    registry.push(repo, img, tag)
    got = create_image_runtime(control, f"{ecr_host(hangar)}/{repo}:{tag}")
    assert httpx.get(f"{hangar.url}/healthz").status_code == 200
    return got


def rootfs_of(hangar: HangarServer, img: Image) -> Path:
    return hangar.data_dir / "images" / "rootfs" / img.digest.split(":")[1]


def failed(got: dict[str, Any], *needles: str) -> str:
    assert got["status"] == "CREATE_FAILED", got
    for needle in needles:
        assert needle in got["failureReason"], got["failureReason"]
    return got["failureReason"]


def test_path_traversal_is_refused(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, outside: Path
) -> None:
    img = image([[BUSY, Entry(f"../../../../../..{outside}/pwned", data=b"x")]])
    failed(deploy(hangar, registry, control, repo, img), "path traversal")
    assert not rootfs_of(hangar, img).exists()


def test_absolute_member_names_stay_inside_the_rootfs(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, outside: Path
) -> None:
    img = image([[BUSY, Entry(f"{outside}/inside", data=b"x")]])
    assert deploy(hangar, registry, control, repo, img)["status"] == "READY"
    assert (rootfs_of(hangar, img) / str(outside).lstrip("/") / "inside").read_bytes() == b"x"


@pytest.mark.parametrize("link", ["absolute", "escaping"])
def test_writing_through_a_symlink_is_refused(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, outside: Path, link: str
) -> None:
    target = str(outside) if link == "absolute" else f"../../../../../../../..{outside}"
    img = image([[BUSY, Entry("evil", "symlink", target=target), Entry("evil/pwned", data=b"x")]])
    failed(deploy(hangar, registry, control, repo, img), "through a symlink")


def test_symlinks_are_kept_as_symlinks_never_followed(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, outside: Path
) -> None:
    img = image(
        [[BUSY, Entry("abs", "symlink", target=str(outside)), Entry("up", "symlink", target="../../../../etc")]]
    )
    assert deploy(hangar, registry, control, repo, img)["status"] == "READY"
    rootfs = rootfs_of(hangar, img)
    assert os.readlink(rootfs / "abs") == str(outside) and os.readlink(rootfs / "up") == "../../../../etc"


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([Entry("h", "hardlink", target="../../../../etc/passwd")], "path traversal"),
        ([Entry("h", "hardlink", target="/etc/passwd")], "must name a regular file"),
        ([Entry("s", "symlink", target="/etc"), Entry("h", "hardlink", target="s/passwd")], "must name a regular file"),
        ([Entry("s", "symlink", target="/etc/passwd"), Entry("h", "hardlink", target="s")], "must name a regular file"),
    ],
    ids=["traversal", "absolute-host-file", "through-symlink-dir", "to-a-symlink"],
)
def test_hard_links_leaving_the_layer_are_refused(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, entries: list[Entry], needle: str
) -> None:
    failed(deploy(hangar, registry, control, repo, image([[BUSY, *entries]])), needle)


def test_hard_links_inside_the_layer_work(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str
) -> None:
    img = image([[BUSY, Entry("bin/twin", "hardlink", target="bin/agent")]])
    assert deploy(hangar, registry, control, repo, img)["status"] == "READY"
    rootfs = rootfs_of(hangar, img)
    assert (rootfs / "bin" / "twin").stat().st_ino == (rootfs / "bin" / "agent").stat().st_ino


def test_devices_are_skipped_and_setuid_is_stripped(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str
) -> None:
    entries = [
        BUSY,
        Entry("dev/mem", "chr"),
        Entry("dev/sda", "blk"),
        Entry("dev/pipe", "fifo"),
        Entry("bin/su", data=b"#!/bin/sh\n", mode=0o4755),
        Entry("bin/sg", data=b"#!/bin/sh\n", mode=0o2755),
        Entry("tmp", "dir", mode=0o1777),
        Entry("etc/shadow", data=b"root:x", mode=0o600),
        Entry("etc/shared", data=b"x", mode=0o666),
    ]
    img = image([entries])
    assert deploy(hangar, registry, control, repo, img)["status"] == "READY"
    rootfs = rootfs_of(hangar, img)
    assert sorted(p.name for p in (rootfs / "dev").iterdir()) == []
    assert stat.S_IMODE((rootfs / "bin" / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((rootfs / "bin" / "sg").stat().st_mode) == 0o755
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o755  # nothing in the store is world-writable
    assert stat.S_IMODE((rootfs / "etc" / "shadow").stat().st_mode) == 0o644  # readable by the session's uid
    assert stat.S_IMODE((rootfs / "etc" / "shared").stat().st_mode) == 0o644


def test_gzip_bomb_is_refused_while_streaming(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str
) -> None:
    img = image([[BUSY, Entry("zeros", data=bytes(200 * 1024 * 1024))]])
    assert len(img.layers[0][0]) < 1024 * 1024
    failed(deploy(hangar, registry, control, repo, img), "compression bomb")
    leftovers = [p for p in (hangar.data_dir / "images" / "layers").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_whiteouts_opaque_dirs_and_zstd(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str, outside: Path
) -> None:
    victim = outside.parent / f"{outside.name}-victim"
    victim.write_text("keep me")
    try:
        lower = [
            BUSY,
            Entry("a/x", data=b"x"),
            Entry("a/y", data=b"y"),
            Entry("b/z", data=b"z"),
            Entry("l", "symlink", target=str(outside.parent)),
        ]
        upper = [Entry("a/.wh.x"), Entry("b/.wh..wh..opq"), Entry("b/new", data=b"n"), Entry(f"l/.wh.{victim.name}")]
        img = image([lower, upper], compression="zstd")
        assert deploy(hangar, registry, control, repo, img)["status"] == "READY"
        rootfs = rootfs_of(hangar, img)
        assert sorted(p.name for p in (rootfs / "a").iterdir()) == ["y"]
        assert sorted(p.name for p in (rootfs / "b").iterdir()) == ["new"]
        assert victim.read_text() == "keep me"  # a whiteout under a lower layer's symlink deletes nothing
    finally:
        victim.unlink()


def test_lying_digests_are_refused_at_push(registry: RegistryClient, repo: str) -> None:
    blob = b"honest bytes"
    lie = registry.push_blob(repo, blob, digest=digest_of(b"other bytes"))
    assert lie.status_code == 400 and lie.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(b'other bytes')}").status_code == 404
    assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(blob)}").status_code == 404
    img = image([[BUSY]])
    for data in img.blobs():
        assert registry.push_blob(repo, data).status_code == 201
    wrong_name = registry.push_manifest(repo, digest_of(b"not the manifest"), img.manifest)
    assert wrong_name.status_code == 400 and wrong_name.json()["errors"][0]["code"] == "DIGEST_INVALID"
    document = json.loads(img.manifest)
    document["layers"][0]["size"] += 1
    wrong_size = registry.push_manifest(repo, "lying-size", json.dumps(document).encode())
    assert wrong_size.status_code == 400 and wrong_size.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    document["layers"][0]["digest"] = digest_of(b"never pushed")
    missing = registry.push_manifest(repo, "missing-blob", json.dumps(document).encode())
    assert missing.status_code == 400 and missing.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_a_blob_damaged_in_the_store_is_never_unpacked(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str
) -> None:
    img = image([[BUSY, Entry("unique", data=uuid.uuid4().bytes)]])
    tag = uuid.uuid4().hex[:10]
    registry.push(repo, img, tag)
    blob = hangar.data_dir / "images" / "blobs" / "sha256" / digest_of(img.layers[0][0]).split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(gzip.compress(b"tampered"))
    got = create_image_runtime(control, f"{ecr_host(hangar)}/{repo}:{tag}")
    failed(got, "does not")
    assert not rootfs_of(hangar, img).exists()


def test_an_image_over_2_gb_is_refused(registry: RegistryClient, control: Any, hangar: HangarServer, repo: str) -> None:
    """Declared sizes only: the limit is checked on the manifest, before anything that large is read."""
    img = image([[BUSY]])
    for data in img.blobs():
        registry.push_blob(repo, data)
    document = json.loads(img.manifest)
    document["layers"][0]["size"] = 3 * 1024**3
    answer = registry.push_manifest(repo, "huge", json.dumps(document).encode())
    assert answer.status_code == 400
    error = answer.json()["errors"][0]
    assert error["code"] == "SIZE_INVALID" and "2 GB" in error["message"]


def _index(registry: RegistryClient, repo: str, children: list[tuple[Image, str]]) -> bytes:
    manifests = []
    for img, arch in children:
        registry.push(repo, img, f"{arch}-{uuid.uuid4().hex[:6]}")
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": img.digest,
                "size": len(img.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


def test_architecture(hangar: HangarServer, registry: RegistryClient, control: Any, repo: str) -> None:
    arm = image([[BUSY, Entry("arch", data=b"arm64")]], architecture="arm64")
    amd = image([[BUSY, Entry("arch", data=b"amd64")]], architecture="amd64")
    reason = failed(deploy(hangar, registry, control, repo, arm), "linux/arm64", "linux/amd64")
    assert "exec format error" in reason
    only_arm = _index(registry, repo, [(arm, "arm64")])
    assert registry.push_manifest(repo, "arm-only", only_arm, OCI_INDEX).status_code == 201
    failed(create_image_runtime(control, f"{ecr_host(hangar)}/{repo}:arm-only"), "linux/amd64", "linux/arm64")
    both = _index(registry, repo, [(arm, "arm64"), (amd, "amd64")])
    assert registry.push_manifest(repo, "multi", both, OCI_INDEX).status_code == 201
    got = create_image_runtime(control, f"{ecr_host(hangar)}/{repo}:multi")
    assert got["status"] == "READY", got.get("failureReason")
    assert (rootfs_of(hangar, amd) / "arch").read_bytes() == b"amd64"


def test_a_config_that_is_not_json_fails_clearly(
    hangar: HangarServer, registry: RegistryClient, control: Any, repo: str
) -> None:
    img = image([[BUSY]])
    img.config = b"\x00not json"
    document = json.loads(img.manifest)
    document["config"] = {"mediaType": OCI_CONFIG, "digest": digest_of(img.config), "size": len(img.config)}
    img.manifest = json.dumps(document).encode()
    failed(deploy(hangar, registry, control, repo, img), "config is not JSON")
