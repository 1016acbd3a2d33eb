"""Size limits with the caps turned down (so no test writes gigabytes): a streamed upload past the image limit is
cut off with 413, a manifest declaring too much is refused, a layer unpacking past the cap and a layer that is not a
tar archive end CREATE_FAILED, and nothing half-done stays behind."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.images.conftest import create_image_runtime, ecr_host, new_repository
from tests.support.oci import Entry, RegistryClient, digest_of, ecr_password, image
from tests.support.server import HangarServer

MAX_BYTES = 1024 * 1024
MAX_UNPACKED = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    env = {"HANGAR_IMAGE_MAX_BYTES": str(MAX_BYTES), "HANGAR_IMAGE_MAX_UNPACKED_BYTES": str(MAX_UNPACKED)}
    server = HangarServer(data_dir=tmp_path_factory.mktemp("small") / "data", env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def setup(small: HangarServer) -> Iterator[tuple[RegistryClient, Any, str]]:
    ecr = small.boto3_client("ecr")
    client = RegistryClient(small.url, ecr_password(ecr))
    yield client, small.boto3_client("bedrock-agentcore-control"), new_repository(ecr, "limits")
    client.close()


def test_a_streamed_upload_past_the_limit_is_cut_off(
    small: HangarServer, setup: tuple[RegistryClient, Any, str]
) -> None:
    client, _, repo = setup
    data = os.urandom(2 * MAX_BYTES)
    location = client.http.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count while streaming
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    answer = client.http.patch(location, content=chunks())
    assert answer.status_code == 413 and answer.json()["errors"][0]["code"] == "SIZE_INVALID"
    assert client.http.get(location).status_code == 404  # the session is gone with its bytes
    assert list((small.data_dir / "images" / "uploads").iterdir()) == []
    assert client.http.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404
    monolithic = client.push_blob(repo, data)
    assert monolithic.status_code == 413


def test_a_manifest_declaring_too_much_is_refused(setup: tuple[RegistryClient, Any, str]) -> None:
    client, _, repo = setup
    img = image([[Entry("bin/agent", data=b"x")]])
    for blob in img.blobs():
        client.push_blob(repo, blob)
    document = json.loads(img.manifest)
    document["layers"][0]["size"] = MAX_BYTES + 1
    answer = client.push_manifest(repo, "big", json.dumps(document).encode())
    assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_unpacking_past_the_cap_fails(small: HangarServer, setup: tuple[RegistryClient, Any, str]) -> None:
    client, control, repo = setup
    img = image([[Entry("bin/agent", data=b"x")], [Entry("big", data=bytes(MAX_UNPACKED + 1))]])
    client.push(repo, img, "unpacks-big")
    got = create_image_runtime(control, f"{ecr_host(small)}/{repo}:unpacks-big")
    assert got["status"] == "CREATE_FAILED" and "unpacked size cap" in got["failureReason"]
    layers = small.data_dir / "images" / "layers"
    assert [p.name for p in layers.iterdir() if p.name.startswith(".tmp-")] == []
    assert not (small.data_dir / "images" / "rootfs" / img.digest.split(":")[1]).exists()


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (gzip.compress(b"this is not a tar archive" * 100), "not a readable tar archive"),
        (gzip.compress(bytes(10_000))[:-20], "not a readable tar archive"),  # truncated gzip
    ],
    ids=["not-tar", "truncated-gzip"],
)
def test_layers_that_are_not_archives_fail(
    small: HangarServer, setup: tuple[RegistryClient, Any, str], blob: bytes, needle: str
) -> None:
    client, control, repo = setup
    img = image([[Entry("bin/agent", data=b"x")]])
    img.layers = [(blob, img.layers[0][1])]
    document = json.loads(img.manifest)
    document["layers"][0].update(digest=digest_of(blob), size=len(blob))
    img.manifest = json.dumps(document).encode()
    tag = digest_of(blob)[7:17]
    client.push(repo, img, tag)
    got = create_image_runtime(control, f"{ecr_host(small)}/{repo}:{tag}")
    assert got["status"] == "CREATE_FAILED" and needle in got["failureReason"]
