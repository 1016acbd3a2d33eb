"""Slow and rude clients against a real ``hangar serve``: slowloris headers and bodies, and 10,000 connections
opened and dropped. The server must keep serving others meanwhile, stay healthy after, and leak no descriptor.

Every loop is bounded in count and in time and talks to loopback only.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest

from tests.support.server import HangarServer

SLOW_CLIENTS = 100
DROPPED_CONNECTIONS = 10_000
BATCH = 250  # connections open at once while dropping (well under the server's descriptor limit)
FD_TOLERANCE = 12  # the store's pool, log files and lazily opened files may vary by a few


def fd_count(server: HangarServer) -> int:
    assert server.process is not None
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def settled_fd_count(server: HangarServer, ceiling: int, wait_s: float = 30.0) -> int:
    """The server's descriptor count once it is back under ``ceiling`` (or whatever it is when the wait ends)."""
    deadline = time.monotonic() + wait_s
    count = fd_count(server)
    while count > ceiling and time.monotonic() < deadline:
        time.sleep(0.2)
        count = fd_count(server)
    return count


def held_connections(server: HangarServer, baseline: int, wait_s: float = 10.0) -> int:
    """How many descriptors above ``baseline`` the server holds once it has accepted what is waiting (the accept
    queue drains asynchronously; at most ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    held = fd_count(server) - baseline
    while held < SLOW_CLIENTS and time.monotonic() < deadline:
        time.sleep(0.1)
        held = fd_count(server) - baseline
    return held


def assert_serves(server: HangarServer) -> None:
    """A normal request (health and a SigV4-signed API call) gets a normal answer."""
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    control = server.boto3_client("bedrock-agentcore-control")
    assert "agentRuntimes" in control.list_agent_runtimes()


def connect(server: HangarServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextmanager
def open_sockets(server: HangarServer, count: int) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(connect(server))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def trickle(sockets: list[socket.socket], chunk: bytes) -> None:
    """One more small piece on every slow connection; one the server has already closed is simply skipped."""
    for sock in sockets:
        with suppress(OSError):
            sock.sendall(chunk)


@pytest.fixture(scope="module")
def baseline(hangar: HangarServer) -> int:
    assert_serves(hangar)  # warm every lazily opened descriptor first
    return settled_fd_count(hangar, ceiling=0, wait_s=1.0)


def test_slowloris_headers_do_not_starve_other_clients(hangar: HangarServer, baseline: int) -> None:
    with open_sockets(hangar, SLOW_CLIENTS) as sockets:
        trickle(sockets, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert held_connections(hangar, baseline) >= SLOW_CLIENTS // 2, "the slow clients are not even connected"
        for round_ in range(10):
            trickle(sockets, f"X-Slow-{round_}: {'a' * 10}\r\n".encode())
            assert_serves(hangar)
            time.sleep(0.1)
    assert_serves(hangar)
    assert settled_fd_count(hangar, baseline + FD_TOLERANCE) <= baseline + FD_TOLERANCE


@pytest.mark.parametrize(
    "head",
    [
        # A control-plane call: the gateway reads the whole (capped) body before it checks the signature.
        b"PUT /runtimes/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n",
        # A data-plane invoke: authenticated first, so the runtime's existence is never revealed.
        b"POST /runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-west-2%3A123456789012%3Aruntime%2Fslow-1234567890"
        b"/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n\r\n",
        # An S3 upload, chunked so the body never announces its end.
        b"PUT /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["control", "invoke", "s3-chunked"],
)
def test_slowloris_bodies_then_abandoned(hangar: HangarServer, baseline: int, head: bytes) -> None:
    chunked = b"chunked" in head
    with open_sockets(hangar, SLOW_CLIENTS) as sockets:
        trickle(sockets, head)
        assert held_connections(hangar, baseline) >= SLOW_CLIENTS // 2, "the slow clients are not even connected"
        for _ in range(10):
            trickle(sockets, b"1\r\n{\r\n" if chunked else b"{")
            assert_serves(hangar)
            time.sleep(0.1)
        # Half of them are cut with a reset instead of a clean close.
        for sock in sockets[::2]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert_serves(hangar)
    assert settled_fd_count(hangar, baseline + FD_TOLERANCE) <= baseline + FD_TOLERANCE
    assert "Traceback" not in hangar.log()


def test_ten_thousand_connections_opened_and_dropped(hangar: HangarServer, baseline: int) -> None:
    """Connect and vanish: at once, after half a request line, or with a reset; in batches, 10,000 in all."""
    rude = (b"", b"GET /heal", b"PUT /runtimes/ HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    opened = 0
    while opened < DROPPED_CONNECTIONS:
        batch = []
        for index in range(min(BATCH, DROPPED_CONNECTIONS - opened)):
            sock = connect(hangar)
            first = rude[(opened + index) % len(rude)]
            if first:
                with suppress(OSError):
                    sock.sendall(first)
            if (opened + index) % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            batch.append(sock)
        for sock in batch:
            sock.close()
        opened += len(batch)
    assert opened == DROPPED_CONNECTIONS
    assert_serves(hangar)
    assert settled_fd_count(hangar, baseline + FD_TOLERANCE) <= baseline + FD_TOLERANCE
    assert "Traceback" not in hangar.log()
