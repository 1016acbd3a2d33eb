"""An MCP 1.x client session, run by ``test_mcp1.py`` under a venv holding ``mcp<2`` (the major most users run).

argv: URL, access key id, secret. Prints one JSON line: the tool answers and what each HTTP exchange returned.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

SIGNED = ("host", "content-type", "accept", "mcp-session-id", "mcp-protocol-version")


class SigV4(httpx.Auth):
    requires_request_body = True

    def __init__(self, key: str, secret: str) -> None:
        self.credentials = Credentials(key, secret)

    def auth_flow(self, request: httpx.Request) -> Any:
        chosen = {k: v for k, v in request.headers.items() if k.lower() in SIGNED}
        signed = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=chosen)
        SigV4Auth(self.credentials, "bedrock-agentcore", "us-west-2").add_auth(signed)
        request.headers["Authorization"] = signed.headers["Authorization"]
        request.headers["X-Amz-Date"] = signed.headers["X-Amz-Date"]
        yield request


async def main(url: str, key: str, secret: str) -> dict[str, Any]:
    exchanges: list[list[Any]] = []

    async def hook(response: httpx.Response) -> None:
        exchanges.append([response.request.method, response.status_code, response.headers.get("mcp-session-id")])

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    http = httpx.AsyncClient(auth=SigV4(key, secret), timeout=120, event_hooks={"response": [hook]})
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write, _session_id),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        added = await session.call_tool("add", {"a": 20, "b": 22})
        await session.call_tool("count", {"to": 2}, progress_callback=on_progress)
        await session.call_tool("remember", {"note": "one"})
        notes = await session.call_tool("remember", {"note": "two"})
    return {
        "added": added.content[0].text,
        "notes": notes.structuredContent,
        "progress": progress,
        "exchanges": exchanges,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
