"""Byte streaming between a client and an agent: knows HTTP and ASGI, nothing about runtimes or sessions.

``StreamedResponse`` sends the status and headers at once, then every body chunk as it arrives. If the source
breaks, the client's response is aborted (no terminating chunk), so the client sees an error instead of a short
but apparently complete body. A client that goes away stops the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("hangar.gateway")

# Called once when the stream is over: True when it completed, False when the agent's side broke.
OnEnd = Callable[[bool], Awaitable[None]]


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class StreamedResponse(Response):
    """An ASGI response whose body is ``chunks`` (e.g. the body of an agent's answer).

    ``close`` releases the source (always awaited), ``on_end`` learns whether the stream completed. ``whole``: the
    entire body, already at hand (a small answer that came with its headers): sent in one message, with no
    disconnect watch (there is nothing left to stop), and ``chunks`` is not read.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        status_code: int,
        headers: list[tuple[str, str]],
        *,
        close: Callable[[], Awaitable[None]],
        on_end: OnEnd,
        whole: bytes | None = None,
    ) -> None:
        self.chunks = chunks
        self.whole = whole
        self.close = close
        self.status_code = status_code
        self.raw_headers = encode_headers(headers)
        self.background = None
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.whole is not None:
            await self._send_whole(self.whole, send)
            return
        completed = False
        watch = _DisconnectWatch(asyncio.current_task())
        watcher = asyncio.create_task(watch.run(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            watch.finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            completed = True
        except Exception as exc:
            # Returning without the final chunk makes the server close the connection: the client sees the break.
            log.warning("stream to the client aborted: the agent side broke (%s: %s)", type(exc).__name__, exc)
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            watch.uncancel()
            completed = True  # the client left; the agent did nothing wrong
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self.close()
            await self.on_end(completed)

    async def _send_whole(self, body: bytes, send: Send) -> None:
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            completed = True
        except Exception as exc:
            log.warning("answer to the client aborted (%s: %s)", type(exc).__name__, exc)
        finally:
            with contextlib.suppress(Exception):
                await self.close()
            await self.on_end(completed)


class _DisconnectWatch:
    """Cancels the streaming task when the client disconnects, unless the stream has already finished."""

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.finished = False
        self.disconnected = False

    async def run(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished and self.task is not None:
                    self.disconnected = True
                    self.task.cancel()
                return

    def uncancel(self) -> None:
        if self.task is not None:
            self.task.uncancel()
