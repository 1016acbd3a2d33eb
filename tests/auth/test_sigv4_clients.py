"""Requests made by real AWS clients (boto3, the AgentCore SDK) verify, byte for byte as they would be sent.

Each client is stopped at ``before-send`` - after it signed - and its request is handed to a SigV4Verifier
backed by a real credential store; the server-level suite covers the HTTP path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import boto3
import pytest
from botocore.config import Config

from hangar.auth.credentials import CredentialStore
from hangar.auth.errors import InvalidSignatureError
from hangar.auth.sigv4 import SignedRequest, SigV4Verifier, VerifiedCaller
from hangar.auth.vault import open_vault
from hangar.store.engine import open_engine

RUNTIME_ARN = "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/myagent-abcdefghij"


class _Captured(Exception):
    pass


@pytest.fixture(scope="module")
def store_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CredentialStore, tuple[str, str]]]:
    directory: Path = tmp_path_factory.mktemp("store")
    engine = open_engine(f"sqlite:///{directory / 'hangar.db'}")
    store = CredentialStore(engine, open_vault(directory / "vault.key"), "123456789012")
    key, secret = store.create("tester")
    yield store, (key.access_key_id, secret)
    engine.dispose()


def capture(service: str, key: tuple[str, str], call: str, **kwargs: object) -> tuple[SignedRequest, str]:
    """Run a real boto3 call and return the request it signed, plus its body's sha256."""
    client = boto3.client(
        service,
        endpoint_url="http://127.0.0.1:8780",
        region_name="us-west-2",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    seen = []

    def stop(request, **_: object) -> None:  # type: ignore[no-untyped-def]
        seen.append(request)
        raise _Captured

    client.meta.events.register("before-send", stop)
    with pytest.raises(_Captured):
        getattr(client, call)(**kwargs)
    prepared = seen[0]
    body = prepared.body
    if hasattr(body, "read"):
        body = body.read()
    parts = urlsplit(prepared.url)
    headers = [
        (name, value.decode() if isinstance(value, bytes) else value) for name, value in prepared.headers.items()
    ]
    headers.append(("Host", parts.netloc))
    return SignedRequest(prepared.method, parts.path, parts.query, headers), hashlib.sha256(body or b"").hexdigest()


def verify(store: CredentialStore, request: SignedRequest, payload_sha256: str) -> VerifiedCaller:
    return anyio.run(SigV4Verifier(store, "us-west-2").verify, request, payload_sha256)


@pytest.mark.parametrize(
    ("service", "call", "kwargs"),
    [
        ("bedrock-agentcore", "invoke_agent_runtime", {"agentRuntimeArn": RUNTIME_ARN, "payload": b'{"p": "hi"}'}),
        (
            "bedrock-agentcore",
            "invoke_agent_runtime",
            {
                "agentRuntimeArn": RUNTIME_ARN,
                "payload": b"x" * 70_000,
                "qualifier": "prod",
                "contentType": "application/json",
                "accept": "text/event-stream",
                "mcpSessionId": "m-1",
                "runtimeUserId": "user one",
                "traceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
        ),
        ("bedrock-agentcore", "stop_runtime_session", {"agentRuntimeArn": RUNTIME_ARN, "runtimeSessionId": "s" * 40}),
        ("bedrock-agentcore-control", "list_agent_runtimes", {"maxResults": 10, "nextToken": "a b+c/d=="}),
        ("bedrock-agentcore-control", "get_agent_runtime", {"agentRuntimeId": "myagent-abcdefghij"}),
        ("s3", "put_object", {"Bucket": "code", "Key": "agents/a b+c/main.zip", "Body": b"PK\x03\x04"}),
    ],
)
def test_boto3_requests_verify(store_and_key, service: str, call: str, kwargs: dict[str, object]) -> None:
    store, key = store_and_key
    request, payload_sha256 = capture(service, key, call, **kwargs)
    caller = verify(store, request, payload_sha256)
    assert caller.key.access_key_id == key[0]
    assert caller.service == ("s3" if service == "s3" else "bedrock-agentcore")


def test_arn_path_is_double_encoded_in_the_canonical_request(store_and_key) -> None:
    """Decoding %2F once before verifying (a classic server bug) must not verify: the path would differ."""
    store, key = store_and_key
    request, payload_sha256 = capture(
        "bedrock-agentcore", key, "invoke_agent_runtime", agentRuntimeArn=RUNTIME_ARN, payload=b"{}"
    )
    assert "%3A" in request.raw_path
    decoded = SignedRequest(request.method, request.raw_path.replace("%2F", "/"), request.query_string, request.headers)
    with pytest.raises(InvalidSignatureError):
        verify(store, decoded, payload_sha256)


def test_agentcore_sdk_presigned_websocket_url_verifies(store_and_key, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK presigns with the host name only (no port): accepted for presigned URLs."""
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient

    store, key = store_and_key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = AgentCoreRuntimeClient(region="us-west-2")
    url = urlsplit(
        client.generate_presigned_url(RUNTIME_ARN, session_id="s" * 40, endpoint_name="DEFAULT", expires=300)
    )
    empty = hashlib.sha256(b"").hexdigest()
    for host in (url.netloc, url.netloc + ":8443"):
        request = SignedRequest("GET", url.path, url.query, [("Host", host), ("Upgrade", "websocket")])
        assert verify(store, request, empty).presigned


def test_agentcore_sdk_websocket_headers_verify(store_and_key, monkeypatch: pytest.MonkeyPatch) -> None:
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient

    store, key = store_and_key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ws_url, headers = AgentCoreRuntimeClient(region="us-west-2").generate_ws_connection(RUNTIME_ARN, "s" * 40)
    url = urlsplit(ws_url)
    request = SignedRequest("GET", url.path, url.query, list(headers.items()))
    assert not verify(store, request, hashlib.sha256(b"").hexdigest()).presigned
