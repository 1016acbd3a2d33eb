"""The gateway's HTTP protocol (``hangar serve``'s ``http=``): an answer's head and body leave in one send, a
stream's head is not held back until its first chunk, and everything else uvicorn does still works (keep-alive,
100-continue, a malformed request's 400, WebSocket upgrades). A real uvicorn server on loopback, real clients;
the real transport's writes are counted."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect

from hangar.gateway.http_protocol import GatewayHttpProtocol

WRITES: list[bytes] = []  # every write that reached a connection's real transport, in order
RELEASE = threading.Event()  # lets /stream produce its body


class _Counting:
    """The real transport, its writes recorded (the thing under test is what reaches it)."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _CountedProtocol(GatewayHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Counting(transport))  # type: ignore[arg-type]


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        while not RELEASE.is_set():  # the client has the head before the body exists
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    answer = b"got " + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=_CountedProtocol, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = threading.Event()
    for _ in range(600):
        if instance.started:
            break
        deadline.wait(0.05)
    assert instance.started, "uvicorn did not start"
    yield f"127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(30)


def test_small_answers_leave_in_one_send_each_on_a_kept_alive_connection(server: str) -> None:
    with httpx.Client(base_url=f"http://{server}", timeout=30) as client:
        WRITES.clear()
        for n in range(3):
            response = client.post("/echo", content=f"ping {n}".encode())
            assert (response.status_code, response.text) == (200, f"got ping {n}")
    assert len(WRITES) == 3
    for n, write in enumerate(WRITES):
        assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(f"\r\n\r\ngot ping {n}".encode())


def test_a_stream_head_is_sent_before_its_first_chunk_exists(server: str) -> None:
    RELEASE.clear()
    WRITES.clear()
    with httpx.Client(base_url=f"http://{server}", timeout=30) as client, client.stream("GET", "/stream") as response:
        assert response.status_code == 200  # the head arrived while the app still waits for RELEASE
        assert len(WRITES) == 1 and WRITES[0].startswith(b"HTTP/1.1 200 OK\r\n")
        RELEASE.set()
        assert response.read() == b"one"


def test_expect_100_continue_and_a_malformed_request(server: str) -> None:
    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        received = b""
        while b"100 Continue\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        sock.sendall(b"hi")
        while not received.endswith(b"got hi"):
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert b"HTTP/1.1 200 OK\r\n" in received
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):  # the server answers 400 and closes: the close is flushed after the answer
            received += chunk
        assert received.startswith(b"HTTP/1.1 400 ") and received.endswith(b"Invalid HTTP request received.")


def test_websocket_upgrade_still_works(server: str) -> None:
    with connect(f"ws://{server}/ws", open_timeout=30) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "echo hello"
