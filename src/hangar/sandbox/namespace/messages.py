"""Messages on a template's SOCK_SEQPACKET sockets, each with the sender's host pid as the kernel checked it."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from hangar.domain.errors import InternalError

MESSAGE_LIMIT = 65536
CREDS = struct.Struct("iII")


async def receive(sock: socket.socket, timeout: float) -> tuple[bytes, int | None]:
    """One message from a non-blocking SOCK_SEQPACKET socket and the sender's host pid, if it sent credentials."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(MESSAGE_LIMIT, socket.CMSG_SPACE(CREDS.size))
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise InternalError("the warm template did not answer in time") from None
            finally:
                loop.remove_reader(sock.fileno())
            continue
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = CREDS.unpack(payload[: CREDS.size])[0]
        return data, pid


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    """(host end, child end): the host end is non-blocking and receives the sender's credentials."""
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    host.setblocking(False)
    return host, child


def parse(message: bytes) -> dict[str, Any]:
    """A zygote's JSON event; anything unreadable becomes a ``failed`` event naming it."""
    try:
        value = json.loads(message) if message else {}
    except ValueError:
        value = {"event": "failed", "reason": f"unreadable message {message[:80]!r}"}
    return value if isinstance(value, dict) else {}
