"""kill -9 of ``hangar serve`` in the middle of a chunked push and in the middle of an unpack, then a restart:
no half-written blob is ever visible under a digest, no half-unpacked layer or rootfs is ever used, and the
interrupted version is prepared again to completion."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images.conftest import ecr_host, new_repository, wait_runtime
from tests.support.oci import Entry, RegistryClient, digest_of, ecr_password, image
from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/agent"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HangarServer]:
    hangar = HangarServer(data_dir=tmp_path / "data").start()
    yield hangar
    hangar.stop()


def assert_store_consistent(hangar: HangarServer, client: RegistryClient, repo: str) -> None:
    """Every blob under a digest hashes to it, on disk and as served; nothing temporary survived the start."""
    images = hangar.data_dir / "images"
    assert list((images / "tmp").iterdir()) == []
    assert [p for p in (images / "layers").iterdir() if p.name.startswith(".tmp-")] == []
    assert [p for p in (images / "rootfs").iterdir() if p.name.startswith(".tmp-")] == []
    for blob in (images / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        served = client.http.get(f"/v2/{repo}/blobs/sha256:{blob.name}")
        assert hashlib.sha256(served.content).hexdigest() == blob.name


def test_kill_during_a_chunked_push(server: HangarServer) -> None:
    ecr = server.boto3_client("ecr")
    repo = new_repository(ecr, "crash-push")
    client = RegistryClient(server.url, ecr_password(ecr))
    data = bytes(range(256)) * 4096 * 8  # 8 MiB
    digest = digest_of(data)
    location = client.http.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    assert (
        client.http.patch(
            location, content=data[: 1 << 20], headers={"Content-Range": f"0-{(1 << 20) - 1}"}
        ).status_code
        == 202
    )
    upload = server.data_dir / "images" / "uploads" / location.rsplit("/", 1)[1]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield data[1 << 20 : 3 << 20]
        release.wait(30)  # the rest never comes: the server dies mid-request
        yield data[3 << 20 :]

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            client.http.put(location, params={"digest": digest}, content=body())

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while upload.stat().st_size < (3 << 20) and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    release.set()
    sender.join(30)
    server.start()
    client.close()
    client = RegistryClient(server.url, ecr_password(ecr))
    assert client.http.head(f"/v2/{repo}/blobs/{digest}").status_code == 404  # never visible half-written
    # the session survives the crash with what arrived; completing it with the full digest is refused
    status = client.http.get(location)
    assert status.status_code == 204
    assert (3 << 20) <= int(status.headers["Range"].split("-")[1]) + 1 < len(data)
    refused = client.http.put(location, params={"digest": digest})
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.http.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    # a fresh push of the same blob then works, and everything stored is what its name says
    assert client.push_blob(repo, data).status_code == 201
    assert client.http.get(f"/v2/{repo}/blobs/{digest}").content == data
    assert_store_consistent(server, client, repo)
    client.close()


def test_kill_during_an_unpack(server: HangarServer) -> None:
    ecr = server.boto3_client("ecr")
    control: Any = server.boto3_client("bedrock-agentcore-control")
    repo = new_repository(ecr, "crash-unpack")
    client = RegistryClient(server.url, ecr_password(ecr))
    files = [Entry(f"data/{i // 1000}/f{i}", data=f"{i}\n".encode()) for i in range(40_000)]
    img = image([[Entry("bin/agent", data=b"agent", mode=0o755)], files])
    client.push(repo, img, "big")
    created = control.create_agent_runtime(
        agentRuntimeName="crash_unpack",
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": f"{ecr_host(server)}/{repo}:big"}},
        networkConfiguration={"networkMode": "PUBLIC"},
        roleArn=ROLE,
    )
    images = server.data_dir / "images"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.name.startswith(".tmp-") for p in (images / "layers").iterdir()):
            break
        time.sleep(0.005)
    else:
        pytest.fail("the unpack never started")
    server.kill()
    rootfs = images / "rootfs" / img.digest.split(":")[1]
    assert not rootfs.exists()  # an interrupted unpack never leaves a rootfs under the image's name
    server.start()
    got = wait_runtime(control, created["agentRuntimeId"])
    assert got["status"] == "READY", got.get("failureReason")
    assert sum(1 for _ in (rootfs / "data").rglob("f*")) == 40_000
    assert (rootfs / "bin" / "agent").read_bytes() == b"agent"
    client.close()
    client = RegistryClient(server.url, ecr_password(ecr))
    assert_store_consistent(server, client, repo)
    client.close()
