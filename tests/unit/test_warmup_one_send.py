"""sandbox/warmup.py ``send_heads_with_bodies``: a forked agent's uvicorn writes an answer's head with its body.

The agent's behaviour must not change, so the same exchanges (a whole answer, a chunked stream, a body-less answer,
HEAD, keep-alive and pipelining, HTTP/1.0, ``Expect: 100-continue``, a WebSocket upgrade) are played against a real
uvicorn with and without the change, for both of its HTTP protocols, and must give the same bytes (but the date).
A stream whose first chunk waits on the client must still get its head first. And the change must be what it
claims: one write for a whole answer where uvicorn makes two.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from hangar.sandbox import warmup

WARMUP_DIR = str(Path(warmup.__file__).parent)
PROTOCOLS = ("h11", "httptools")

SERVE = """
import asyncio, sys
sys.path.insert(0, {folder!r})
import uvicorn
import warmup

gate = asyncio.Event()

async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({{"type": "websocket.accept"}})
        message = await receive()
        await send({{"type": "websocket.send", "text": "echo " + message["text"]}})
        await send({{"type": "websocket.close", "code": 1000}})
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/whole":
        payload = b'{{"echo": "' + body + b'"}}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({{"type": "http.response.start", "status": 200, "headers": headers}})
        await send({{"type": "http.response.body", "body": payload}})
    elif path == "/stream":
        sse = [(b"content-type", b"text/event-stream")]
        await send({{"type": "http.response.start", "status": 200, "headers": sse}})
        for n in range(3):
            await send({{"type": "http.response.body", "body": b"data: %d\\n\\n" % n, "more_body": True}})
            await asyncio.sleep(0)
        await send({{"type": "http.response.body", "body": b""}})
    elif path == "/gated":  # the first chunk comes only once the client, having read the head, opened /release
        await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}})
        await gate.wait()
        await send({{"type": "http.response.body", "body": b"after the gate"}})
    elif path == "/release":
        gate.set()
        await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}})
        await send({{"type": "http.response.body", "body": b""}})
    else:
        await send({{"type": "http.response.start", "status": 204, "headers": []}})
        await send({{"type": "http.response.body", "body": b""}})

config = uvicorn.Config(app, host="127.0.0.1", port=0, http={http!r}, lifespan="off", log_level="error")
config.load()
if {patched!r}:
    print("done:", warmup.send_heads_with_bodies(config), flush=True)
server = uvicorn.Server(config)

async def main():
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print("port:", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task

asyncio.run(main())
"""


class Agent:
    """A real uvicorn in its own process, with or without the warm-up's change."""

    def __init__(self, http: str, patched: bool) -> None:
        code = SERVE.format(folder=WARMUP_DIR, http=http, patched=patched)
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        self.done = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("done:"):
                self.done = line
            if line.startswith("port:"):
                self.port = int(line.split()[1])
                return
        raise AssertionError("the agent did not start")

    def exchange(self, *requests: bytes, then: Any = None) -> bytes:
        """Send ``requests`` on one connection (the last closes it, or the server does), read all that comes back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            for request in requests:
                sock.sendall(request)
            if then is not None:
                then(sock)
            return _read_to_end(sock)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}: {got!r}")
        got += chunk
    return got


@pytest.fixture(scope="module", params=PROTOCOLS)
def agents(request: pytest.FixtureRequest) -> Iterator[tuple[Agent, Agent]]:
    plain, patched = Agent(request.param, False), Agent(request.param, True)
    try:
        assert "sends an answer's head with its body" in patched.done
        yield plain, patched
    finally:
        plain.stop()
        patched.stop()


def _undated(raw: bytes) -> bytes:
    return re.sub(rb"(?im)^date: [^\r]*\r\n", b"", raw)


CLOSE = b"Connection: close\r\n"
EXCHANGES = {
    "whole": [b"POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n" + CLOSE + b"\r\nhello"],
    "stream": [b"GET /stream HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n"],
    "no body": [b"GET /empty HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n"],
    "head": [b"HEAD /whole HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n"],
    "keep-alive, pipelined": [
        b"POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n1GET /stream HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n" + CLOSE + b"\r\n2",
    ],
    "http/1.0": [b"POST /whole HTTP/1.0\r\nContent-Length: 3\r\n\r\nold"],
    "chunked request": [
        b"POST /whole HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        + CLOSE
        + b"\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    ],
}


@pytest.mark.parametrize("name", list(EXCHANGES))
def test_the_same_bytes_as_uvicorn_itself(agents: tuple[Agent, Agent], name: str) -> None:
    plain, patched = agents
    expected = _undated(plain.exchange(*EXCHANGES[name]))
    assert expected.startswith(b"HTTP/1.1 ")
    assert _undated(patched.exchange(*EXCHANGES[name])) == expected


def test_expect_100_continue(agents: tuple[Agent, Agent]) -> None:
    """The interim answer is sent before the body is (a client waits for it before sending the body)."""
    head = b"POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n" + CLOSE + b"\r\n"
    answers = []
    for agent in agents:

        def body_after_continue(sock: socket.socket) -> None:
            assert _read_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"late")

        answers.append(_undated(agent.exchange(head, then=body_after_continue)))
    assert answers[0] == answers[1]
    assert b'{"echo": "late"}' in answers[1]


def test_a_streams_head_does_not_wait_for_its_first_chunk(agents: tuple[Agent, Agent]) -> None:
    _, patched = agents

    def release_after_head(sock: socket.socket) -> None:
        assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
        assert patched.exchange(b"GET /release HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n").startswith(b"HTTP/1.1 200 ")

    rest = patched.exchange(b"GET /gated HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n", then=release_after_head)
    assert b"after the gate" in rest


def test_websocket_upgrade(agents: tuple[Agent, Agent]) -> None:
    key = base64.b64encode(os.urandom(16))
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    mask = os.urandom(4)
    text = b"hi"
    frame = bytes([0x81, 0x80 | len(text)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(text))
    answers = []
    for agent in agents:

        def talk(sock: socket.socket) -> None:
            assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
            sock.sendall(frame)

        answers.append(agent.exchange(upgrade, then=talk))
    assert answers[0] == answers[1]
    assert b"echo hi" in answers[1]


class _RecordingTransport(asyncio.Transport):
    """Stands for the socket transport: records each write (each would be one send system call)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _whole(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize("patched", [False, True])
def test_a_whole_answer_is_one_write(http: str, patched: bool) -> None:
    config = uvicorn.Config(_whole, http=http, lifespan="off", log_level="error")
    config.load()
    if patched:
        assert warmup.send_heads_with_bodies(config)
        assert warmup.send_heads_with_bodies(config) == []  # once only

    async def serve_one() -> list[bytes]:
        from uvicorn.server import ServerState

        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = _RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for _ in range(100_000):  # loop passes, not time: the answer is written within a few
            if any(write.endswith(b"ok") for write in transport.writes):
                break
            await asyncio.sleep(0)
        return transport.writes

    writes = [write for write in asyncio.run(serve_one()) if write]
    if patched:
        assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\nok")
    else:
        assert len(writes) == 2  # what uvicorn does by itself: the reason for the change
