"""Helpers of the protocol suite: runtime URLs, a SigV4 ``Auth`` for the clients' own HTTP stacks, bearer auth."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any
from urllib.parse import quote

import httpx
import httpx2
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.server import HangarServer, read_admin_key

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
_SIGNED = ("host", "content-type", "accept", "mcp-session-id", "mcp-protocol-version", SESSION_HEADER.lower())


def invocations_url(server: HangarServer, runtime: dict[str, Any], suffix: str = "invocations") -> str:
    """``…/runtimes/{url-encoded ARN}/invocations?qualifier=DEFAULT``, as AWS documents it for MCP and A2A clients."""
    return f"{server.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/{suffix}?qualifier=DEFAULT"


def _sign(key: tuple[str, str], method: str, url: str, headers: Any, body: bytes) -> dict[str, str]:
    chosen = {name: value for name, value in headers.items() if name.lower() in _SIGNED}
    request = AWSRequest(method=method, url=url, data=body, headers=chosen)
    SigV4Auth(Credentials(*key), "bedrock-agentcore", "us-west-2").add_auth(request)
    return {name: request.headers[name] for name in ("Authorization", "X-Amz-Date")}


class SigV4Httpx2(httpx2.Auth):
    """Signs every request of the ``mcp`` SDK's client (httpx2) with botocore's signer, as boto3 would."""

    requires_request_body = True

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers.update(_sign(self.key, request.method, str(request.url), request.headers, request.content))
        yield request


class SigV4Httpx(httpx.Auth):
    """The same for httpx clients (a2a-sdk, raw requests)."""

    requires_request_body = True

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(_sign(self.key, request.method, str(request.url), request.headers, request.content))
        yield request


def admin_key(server: HangarServer) -> tuple[str, str]:
    return read_admin_key(server.credentials_file)
