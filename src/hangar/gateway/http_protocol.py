"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol, with an answer's head and body in one send.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``, and the body
in a second write. Every write to the client's socket is a system call and a wake-up of the client, which then
reads a head it cannot use without the body; on the warm invoke path that second wake-up is about as costly as
the gateway's own work on the answer. So the head is held back until the next write (the body, or the end of a
body-less answer, which uvicorn always writes) and leaves with it as one send. A head whose body does not follow
within the same event-loop step (a stream that has not produced its first chunk yet) is sent on its own on the
loop's next pass: a held head never waits for the agent.

Only the HTTP cycle is affected: an upgrade to WebSocket hands the real transport to the WebSocket protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "  # how every response head uvicorn writes begins (its STATUS_LINE table)


class _HeadHoldingTransport:
    """A transport that holds a response head until the next write (or the loop's next pass), then sends both."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.real = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self.real.write(held + bytes(data))
        elif bytes(data[: len(_HEAD)]) == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self.real.write(data)

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def flush(self) -> None:
        """Send a held head now (nothing when none is held)."""
        held, self._held = self._held, None
        if held is not None and not self.real.is_closing():
            self.real.write(held)

    def close(self) -> None:
        self.flush()
        self.real.close()

    def write_eof(self) -> None:
        self.flush()
        self.real.write_eof()

    def abort(self) -> None:
        self._held = None
        self.real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # is_closing, get_extra_info, pause_reading, set_protocol, ...


class GatewayHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through ``_HeadHoldingTransport`` (``hangar serve`` passes it as ``http=``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        holding = self.transport
        if isinstance(holding, _HeadHoldingTransport):
            holding.flush()
            self.transport = holding.real
        super().handle_websocket_upgrade()
