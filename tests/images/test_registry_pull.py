"""containerUris naming another registry are pulled: a second Hangar plays that registry (plain HTTP on loopback,
so it is configured insecure, with Basic credentials from HANGAR_REGISTRY_AUTH); digests verified on the way."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
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


class TokenRegistry(ThreadingHTTPServer):
    """A registry front that wants Bearer tokens (as Docker Hub, GHCR, Quay do): ``/v2`` answers 401 with a Bearer
    challenge naming ``/token``; ``/token`` hands out a token (to ``user:secret`` only when ``private``); with the
    token, requests are relayed to the upstream Hangar with its registry password."""

    def __init__(self, upstream: str, password: str, private: bool) -> None:
        self.upstream, self.password, self.private = upstream, password, private
        self.token = uuid.uuid4().hex
        self.tokens_issued = 0
        super().__init__(("127.0.0.1", 0), _TokenHandler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenRegistry

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        registry = self.server
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(b"user:secret").decode()
            if registry.private and self.headers.get("Authorization") != basic:
                self._send(401, b"{}", {})
                return
            registry.tokens_issued += 1
            self._send(200, json.dumps({"token": registry.token}).encode(), {"Content-Type": "application/json"})
            return
        if self.headers.get("Authorization") != f"Bearer {registry.token}":
            challenge = f'Bearer realm="http://{registry.host}/token",service="test-registry"'
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}'
            self._send(401, body, {"WWW-Authenticate": challenge})
            return
        answer = httpx.get(
            registry.upstream + self.path,
            auth=("AWS", registry.password),
            headers={"Accept": self.headers.get("Accept", "*/*")},
        )
        keep = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "docker-content-digest")}
        self._send(answer.status_code, answer.content, keep)


@pytest.fixture(scope="module")
def token_registries(remote: HangarServer, pushed: dict[str, Any]) -> Iterator[tuple[TokenRegistry, TokenRegistry]]:
    servers = (
        TokenRegistry(remote.url, pushed["password"], private=False),
        TokenRegistry(remote.url, pushed["password"], private=True),
    )
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def puller(
    tmp_path_factory: pytest.TempPathFactory,
    remote: HangarServer,
    pushed: dict[str, Any],
    token_registries: tuple[TokenRegistry, TokenRegistry],
) -> Iterator[HangarServer]:
    host = f"127.0.0.1:{remote.port}"
    public, private = token_registries
    env = {
        "HANGAR_INSECURE_REGISTRIES": f"{host},localhost:{remote.port},{public.host},{private.host}",
        "HANGAR_REGISTRY_AUTH": json.dumps(
            {host: {"username": "AWS", "password": pushed["password"]}, private.host: "user:secret"}
        ),
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


def test_bearer_token_registries(
    puller: HangarServer, pushed: dict[str, Any], token_registries: tuple[TokenRegistry, TokenRegistry]
) -> None:
    """The distribution spec's token flow: anonymous (as Docker Hub's public images) and with Basic credentials
    sent to the token service."""
    control = puller.boto3_client("bedrock-agentcore-control")
    for registry in token_registries:
        got = create_image_runtime(control, f"{registry.host}/{pushed['repo']}:v1")
        assert got["status"] == "READY", got.get("failureReason")
        assert registry.tokens_issued >= 1


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
