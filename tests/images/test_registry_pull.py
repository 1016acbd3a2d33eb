"""containerUris naming another registry are pulled: a second Hangar plays that registry (plain HTTP on loopback,
so it is configured insecure, with Basic credentials from HANGAR_REGISTRY_AUTH); digests verified on the way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.images.conftest import create_image_runtime, new_repository
from tests.support.oci import Entry, RegistryClient, ecr_password, image
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    server = HangarServer(data_dir=tmp_path_factory.mktemp("remote") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushed(remote: HangarServer) -> dict[str, Any]:
    ecr = remote.boto3_client("ecr")
    repo = new_repository(ecr, "upstream/agent")
    password = ecr_password(ecr)
    client = RegistryClient(remote.url, password)
    img = image([[Entry("bin/agent", data=b"remote agent", mode=0o755)], [Entry("etc/motd", data=b"pulled")]])
    client.push(repo, img, "v1")
    client.close()
    return {"repo": repo, "image": img, "password": password}


@pytest.fixture(scope="module")
def puller(
    tmp_path_factory: pytest.TempPathFactory, remote: HangarServer, pushed: dict[str, Any]
) -> Iterator[HangarServer]:
    host = f"127.0.0.1:{remote.port}"
    env = {
        "HANGAR_INSECURE_REGISTRIES": f"{host},localhost:{remote.port}",
        "HANGAR_REGISTRY_AUTH": json.dumps({host: {"username": "AWS", "password": pushed["password"]}}),
    }
    server = HangarServer(data_dir=tmp_path_factory.mktemp("puller") / "data", env=env).start()
    yield server
    server.stop()


def test_pull_by_tag_and_by_digest(puller: HangarServer, remote: HangarServer, pushed: dict[str, Any]) -> None:
    control = puller.boto3_client("bedrock-agentcore-control")
    img = pushed["image"]
    for reference in (f"{pushed['repo']}:v1", f"{pushed['repo']}@{img.digest}"):
        got = create_image_runtime(control, f"127.0.0.1:{remote.port}/{reference}")
        assert got["status"] == "READY", got.get("failureReason")
    rootfs = puller.data_dir / "images" / "rootfs" / img.digest.split(":")[1]
    assert (rootfs / "etc" / "motd").read_bytes() == b"pulled"
    assert (rootfs / "bin" / "agent").read_bytes() == b"remote agent"


def test_a_wrong_digest_pin_fails(puller: HangarServer, remote: HangarServer, pushed: dict[str, Any]) -> None:
    control = puller.boto3_client("bedrock-agentcore-control")
    got = create_image_runtime(control, f"127.0.0.1:{remote.port}/{pushed['repo']}@sha256:{'0' * 64}")
    assert got["status"] == "CREATE_FAILED" and "manifest unknown" in got["failureReason"]


def test_missing_credentials_and_unverified_tls_fail_clearly(
    puller: HangarServer, remote: HangarServer, pushed: dict[str, Any]
) -> None:
    control = puller.boto3_client("bedrock-agentcore-control")
    anonymous = create_image_runtime(control, f"localhost:{remote.port}/{pushed['repo']}:v1")
    assert anonymous["status"] == "CREATE_FAILED" and "requires credentials" in anonymous["failureReason"]
    # not configured insecure: TLS is required, and this registry speaks plain HTTP
    tls = create_image_runtime(control, f"127.0.0.2:{remote.port}/{pushed['repo']}:v1")
    assert tls["status"] == "CREATE_FAILED" and "127.0.0.2" in tls["failureReason"]


def test_a_restart_keeps_what_versions_use(puller: HangarServer, pushed: dict[str, Any]) -> None:
    """Garbage collection at start keeps the pulled layers and rootfs a version references (the remote's blobs
    are in no local repository)."""
    rootfs = puller.data_dir / "images" / "rootfs" / pushed["image"].digest.split(":")[1]
    layer_dirs = sorted(p.name for p in (puller.data_dir / "images" / "layers").iterdir())
    puller.stop()
    puller.start()
    assert (rootfs / "etc" / "motd").read_bytes() == b"pulled"
    assert sorted(p.name for p in (puller.data_dir / "images" / "layers").iterdir()) == layer_dirs
