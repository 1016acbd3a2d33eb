"""InvokeAgentRuntimeCommandShell: a pty in a session over ``/runtimes/{arn}/ws/shells``, driven by a raw
``websockets`` client, by the bedrock-agentcore SDK's URL signers and framer, and by ``hangar shell`` under tmux."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.dataplane.support import deploy, new_session_id, wait_for
from tests.support.server import HangarServer, read_admin_key

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
STDIN, STDOUT, STDERR, STATUS, RESIZE, HEARTBEAT, CLOSE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF
HANGAR = Path(sys.executable).parent / "hangar"


@pytest.fixture(scope="module")
def runtime(control: Any) -> dict[str, Any]:
    return deploy(control, "echo", description="shells")


def _url(server: HangarServer, arn: str, shell_id: str | None = None, **query: str) -> str:
    params = {**({"shellId": shell_id} if shell_id else {}), **query}
    suffix = f"?{urlencode(params)}" if params else ""
    return f"ws://127.0.0.1:{server.port}/runtimes/{quote(arn, safe='')}/ws/shells{suffix}"


def _signed(server: HangarServer, url: str, session_id: str) -> dict[str, str]:
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


class Term:
    """A raw shell client: what came on each channel, read until a pattern shows up on stdout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.out = b""
        self.err = b""
        self.statuses: list[dict[str, Any]] = []

    async def send(self, channel: int, payload: bytes | str = b"") -> None:
        await self.ws.send(bytes([channel]) + (payload.encode() if isinstance(payload, str) else payload))

    async def type(self, text: str) -> None:
        await self.send(STDIN, text)

    async def frame(self, timeout: float = 30.0) -> tuple[int, bytes]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, bytes) and raw, raw
        channel, payload = raw[0], raw[1:]
        if channel == STDOUT:
            self.out += payload
        elif channel == STDERR:
            self.err += payload
        elif channel == STATUS:
            self.statuses.append(json.loads(payload))
        return channel, payload

    async def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.out.decode(errors="replace"))):
            await self.frame(max(0.1, deadline - time.monotonic()))
        return found

    async def end(self, timeout: float = 30.0) -> dict[str, Any]:
        """Frames until the terminating status (empty metadata); then the server closes."""
        while True:
            channel, _ = await self.frame(timeout)
            if channel == STATUS and not self.statuses[-1]["metadata"]:
                return self.statuses[-1]


async def _open(server: HangarServer, arn: str, session_id: str, shell_id: str) -> tuple[ClientConnection, Term]:
    url = _url(server, arn, shell_id)
    ws = await websockets.connect(url, additional_headers=_signed(server, url, session_id), max_size=None)
    term = Term(ws)
    channel, _ = await term.frame()
    assert channel == STATUS and term.statuses[0]["metadata"]["shellId"] == shell_id, term.statuses
    return ws, term


def test_commands_stdin_resize_heartbeat_and_exit_status(server: HangarServer, runtime: dict[str, Any]) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def talk() -> None:
        url = _url(server, arn, "first")
        async with websockets.connect(url, additional_headers=_signed(server, url, session_id)) as ws:
            assert ws.response is not None
            assert ws.response.headers["X-Amzn-Bedrock-AgentCore-Shell-Id"] == "first"
            assert ws.response.headers[SESSION_HEADER] == session_id
            term = Term(ws)
            await term.frame()
            assert term.statuses == [
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {"shellId": "first", "reconnected": False},
                    "status": "Success",
                }
            ]
            await term.type("echo $((6*7))-$HANGAR_SANDBOX; tty; stty size\n")
            await term.until(r"42-1\r\n/dev/pts/\d+\r\n24 80\r\n")
            await term.send(RESIZE, json.dumps({"width": 132, "height": 43}))
            await term.type("stty size\n")
            await term.until(r"43 132\r\n")
            await term.type("read line; echo got-$line\n")
            await term.type("typed input\n")
            await term.until(r"got-typed input")
            await term.send(HEARTBEAT)
            while (await term.frame())[0] != HEARTBEAT:
                pass
            await term.type("exit 3\n")
            status = await term.end()
            assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
            assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
            with pytest.raises(ConnectionClosed):
                await term.frame()
            assert ws.close_code == 1000

    asyncio.run(talk())
