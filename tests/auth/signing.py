"""Send requests signed by botocore's own signer (what boto3 and the aws CLI run) to a real server."""

from __future__ import annotations

import httpx
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def signed(
    method: str,
    url: str,
    key: tuple[str, str],
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "bedrock-agentcore",
    region: str = "us-west-2",
    token: str | None = None,
) -> httpx.Request:
    """An httpx request carrying exactly what botocore signed (method, URL, headers, body)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(key[0], key[1], token), service, region).add_auth(request)
    prepared = request.prepare()
    return httpx.Request(method, prepared.url, headers=dict(prepared.headers), content=body)


def presigned_url(url: str, key: tuple[str, str], expires: int = 60, service: str = "bedrock-agentcore") -> str:
    request = AWSRequest(method="GET", url=url, headers={"host": httpx.URL(url).netloc.decode()})
    SigV4QueryAuth(Credentials(*key), service, "us-west-2", expires=expires).add_auth(request)
    return request.url


def send(request: httpx.Request) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.send(request)
