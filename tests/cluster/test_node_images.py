"""Container-image versions on a ``hangar node``: a busybox image pushed to the gateway's ECR (``/v2``), a runtime
created from it, invoked through the node API. The node pulls the manifest the gateway resolved (by digest) and its
blobs from the gateway's registry and unpacks them into its own store; the image's agent answers from a sandbox on
the node, called through the node API and through the ``hangar serve --cluster`` gateway with boto3. One Ray head,
one node, one gateway on a throwaway PostgreSQL for the module."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hangar.artifacts.images.rootfs import RootfsStore
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.dataplane.support import world_readable_dir
from tests.support.agents.image_rootfs import BUSYBOX, BUSYBOX_ARGV, busybox_rootfs
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Image, RegistryClient, digest_of, ecr_password
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import NodeProcess, RayCluster, ray_cluster  # noqa: F401 - the fixture
from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/HangarAgentRole"
pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static is needed (scripts/system-deps test)"),
]


@dataclass
class World:
    server: HangarServer
    node: NodeProcess
    node_dir: Path
    key: bytes
    registry: RegistryClient
    control: Any
    ecr: Any
    layer: tuple[bytes, bytes]  # the busybox layer (blob, diff id source), built once


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster) -> Iterator[World]:  # noqa: F811 - the imported fixture
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    postgres = PostgresCluster.start()  # after the cluster: in its network namespace, where the node is
    try:
        with world_readable_dir("hangar-cluster-img-") as root:
            url = postgres.new_database()
            env = {"HANGAR_DATABASE_URL": url, "HANGAR_CLUSTER": "1"}  # a gateway: its sessions run on the node
            server = HangarServer(data_dir=root / "gw", env=env).start()
            try:
                node = ray_cluster.start_node(
                    root / "node",
                    database_url=url,
                    gateway=server.url,
                    name=f"n-{uuid.uuid4().hex[:6]}",
                    slots=6,
                    env={"AWS_SHARED_CREDENTIALS_FILE": str(server.credentials_file)},
                )
                from hangar.cluster import ray_link

                ray_link.connect()
                ecr = server.boto3_client("ecr")
                registry = RegistryClient(server.url, ecr_password(ecr))
                try:
                    layer = _busybox_layer(root / "rootfs")
                    control = server.boto3_client("bedrock-agentcore-control")
                    yield World(server, node, root / "node", ray_link.cluster_key(), registry, control, ecr, layer)
                finally:
                    registry.close()
            finally:
                server.stop()
    finally:
        postgres.stop()


def _busybox_layer(root: Path) -> tuple[bytes, bytes]:
    """(gzip blob, raw tar) of the busybox rootfs the sandbox tests use (nc serving the contract on 8080)."""
    busybox_rootfs(root)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(root.rglob("*")):
            archive.add(str(path), arcname=str(path.relative_to(root)), recursive=False)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0), raw


def _image(world: World, marker: str) -> Image:
    """The busybox layer plus a layer holding a marker file: a distinct manifest digest per marker."""
    blob, raw = world.layer
    marker_tar = io.BytesIO()
    with tarfile.open(fileobj=marker_tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        data = marker.encode()
        info = tarfile.TarInfo("marker")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        archive.addfile(info, io.BytesIO(data))
    marker_blob = gzip.compress(marker_tar.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(BUSYBOX_ARGV), "Env": ["PATH=/bin", f"MARKER={marker}"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(raw), digest_of(marker_tar.getvalue())]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest_of(b), "size": len(b)} for b in (blob, marker_blob)],
    }
    return Image([(blob, OCI_LAYER_GZIP), (marker_blob, OCI_LAYER_GZIP)], config, json.dumps(manifest).encode())


def _push(world: World, marker: str, repository: str | None = None) -> tuple[str, str]:
    """(repository, manifest digest) of a freshly pushed image tagged ``latest``."""
    if repository is None:
        repository = f"nodeimg-{uuid.uuid4().hex[:8]}"
        world.ecr.create_repository(repositoryName=repository)
    return repository, world.registry.push(repository, _image(world, marker), "latest")


def _runtime(world: World, repository: str) -> str:
    uri = f"123456789012.dkr.ecr.us-west-2.amazonaws.com/{repository}:latest"
    created = world.control.create_agent_runtime(
        agentRuntimeName=f"img_{uuid.uuid4().hex[:10]}",
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        networkConfiguration={"networkMode": "PUBLIC"},
        roleArn=ROLE,
    )
    runtime_id = str(created["agentRuntimeId"])
    deadline = time.monotonic() + 180
    while (status := world.control.get_agent_runtime(agentRuntimeId=runtime_id)["status"]) in ("CREATING", "UPDATING"):
        assert time.monotonic() < deadline, "the runtime did not settle"
        time.sleep(0.3)
    assert status == "READY", status
    return runtime_id


def invoke(world: World, runtime_id: str, session_id: str, payload: dict[str, Any]) -> httpx.Response:
    from hangar.cluster import node_auth
    from hangar.cluster.node_versions import encode_target

    path = f"/node/v1/sessions/{runtime_id}/{session_id}/request"
    headers = {
        node_auth.HEADER: node_auth.sign(world.key, "POST", path),
        "X-Hangar-Target": encode_target(runtime_id, "DEFAULT", 1),
        "X-Hangar-Agent-Method": "POST",
        "X-Hangar-Agent-Path": "/invocations",
        "X-Hangar-H-Content-Type": "application/json",
        "X-Hangar-H-X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session_id,
    }
    return httpx.post(world.node.url + path, content=json.dumps(payload).encode(), headers=headers, timeout=300)


def _node_rootfs(world: World, digest: str) -> Path:
    return RootfsStore(world.node_dir / "images").rootfs_path(digest)


def test_an_image_from_the_gateways_ecr_runs_on_the_node(world: World) -> None:
    repository, digest = _push(world, "one")
    runtime_id = _runtime(world, repository)
    assert not _node_rootfs(world, digest).exists()
    session_id = f"s-{uuid.uuid4()}"
    answer = invoke(world, runtime_id, session_id, {"prompt": "hi"})
    assert answer.status_code == 200, (answer.headers.get("x-hangar-node-error"), answer.text, world.node.log())
    assert "x-hangar-node-error" not in answer.headers
    doc = answer.json()
    assert doc["agent"] == "busybox"  # the image's own agent: busybox nc, no Python in the image
    assert doc["body"] == {"prompt": "hi"}
    rootfs = _node_rootfs(world, digest)  # keyed by the manifest digest, as on the gateway
    assert (rootfs / "marker").read_text() == "one"
    assert (rootfs / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    again = invoke(world, runtime_id, session_id, {"prompt": "again"})
    assert again.status_code == 200, again.text
    assert again.json()["first"] == {"prompt": "hi"}  # the same sandbox answered


def test_an_image_runtime_invoked_through_the_cluster_gateway_answers_from_the_node(world: World) -> None:
    repository, digest = _push(world, "via-gateway")
    runtime_id = _runtime(world, repository)
    arn = world.control.get_agent_runtime(agentRuntimeId=runtime_id)["agentRuntimeArn"]
    data = world.server.boto3_client("bedrock-agentcore")
    session_id = f"s-{uuid.uuid4()}"
    answer = data.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=session_id, payload=b'{"via": "gw"}')
    doc = json.loads(answer["response"].read())
    assert (doc["agent"], doc["body"]) == ("busybox", {"via": "gw"})
    assert (_node_rootfs(world, digest) / "marker").read_text() == "via-gateway"  # unpacked on the node
    listed = httpx.get(
        f"{world.node.url}/node/v1/sessions",
        headers={_auth_header(): _sign(world, "GET", "/node/v1/sessions")},
        timeout=60,
    ).json()["sessions"]
    assert any(s["runtimeSessionId"] == session_id and s["state"] != "Terminated" for s in listed)
    data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id)


def _auth_header() -> str:
    from hangar.cluster import node_auth

    return node_auth.HEADER


def _sign(world: World, method: str, path: str) -> str:
    from hangar.cluster import node_auth

    return node_auth.sign(world.key, method, path)


def test_the_node_pulls_the_digest_the_gateway_resolved_even_after_the_tag_moved(world: World) -> None:
    repository, first = _push(world, "before")
    runtime_id = _runtime(world, repository)  # version 1 is pinned to ``first``
    _, moved = _push(world, "after", repository)
    assert moved != first
    answer = invoke(world, runtime_id, f"s-{uuid.uuid4()}", {})
    assert answer.status_code == 200, (answer.text, world.node.log())
    assert (_node_rootfs(world, first) / "marker").read_text() == "before"
    assert not _node_rootfs(world, moved).exists()


def test_concurrent_first_calls_share_one_preparation(world: World) -> None:
    repository, digest = _push(world, "together")
    runtime_id = _runtime(world, repository)
    sessions = [f"s-{uuid.uuid4()}" for _ in range(3)]
    with ThreadPoolExecutor(len(sessions)) as pool:
        answers = list(pool.map(lambda sid: invoke(world, runtime_id, sid, {"n": sid}), sessions))
    assert [a.status_code for a in answers] == [200] * len(sessions), [a.text for a in answers]
    assert [a.json()["body"]["n"] for a in answers] == sessions
    assert (_node_rootfs(world, digest) / "marker").read_text() == "together"


def test_an_image_version_whose_blobs_are_gone_answers_a_clear_503(world: World) -> None:
    """The gateway lost the repository after the version was made: the node says why instead of hanging."""
    repository, _ = _push(world, "gone")
    runtime_id = _runtime(world, repository)
    world.ecr.delete_repository(repositoryName=repository, force=True)
    answer = invoke(world, runtime_id, f"s-{uuid.uuid4()}", {})
    assert answer.status_code == 503, answer.text
    assert answer.headers["x-hangar-node-error"] == "ServiceUnavailableException"
    assert "cannot prepare the image" in answer.json()["message"]
