"""A small HTTP/1.1 client for the agent behind a sandbox's Unix socket, pooled per sandbox.

Why not httpx: on the warm-invoke path its per-request machinery cost about 1 ms, more than the agent itself. The
agent is one known peer on a local socket, so this client does only what that needs: one request at a time per
connection, keep-alive, ``Content-Length`` or chunked or read-to-close bodies, streamed as they arrive.

Why a protocol and not asyncio streams: a warm invoke is one write and, usually, one read that brings the whole
answer. ``_Conn`` keeps what arrives in one buffer and wakes at most one waiter, so the common answer costs a single
await, and ``AgentResponse.complete_body`` hands over a body that came with its headers without any await at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import cast

MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
READ_LIMIT = 256 * 1024  # buffered answer bytes past which the socket is not read until the consumer catches up
_SIZE, _DATA, _CRLF, _TRAILERS = range(4)  # states of the chunked decoder
MAX_IDLE = 32
# An idle kept-alive connection keeps a forked agent's uvicorn ticking once a second until its own 5 s keep-alive
# timeout ends it (sandbox/warmup.quiet_idle_ticks ticks while any connection is open): closing it sooner lets an
# idle session cost no CPU at all, and reconnecting to a Unix socket costs tens of microseconds.
IDLE_CLOSE_S = 1.0
CONNECT_TIMEOUT_S = 10.0
Body = bytes | AsyncIterator[bytes]


class AgentHttpError(Exception):
    """The agent could not be reached or did not speak HTTP/1.1 properly."""


class _StaleConnection(Exception):
    """The connection ended before a single byte of the answer: safe to retry a replayable request."""


class _Conn(asyncio.Protocol):
    """One connection to the agent: received bytes in ``buffer``, one reader waiting at a time, write flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self.idle_since = 0.0  # loop time it was last put back in its pool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport always is one

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= READ_LIMIT and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # nothing is ever written after the agent's end: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    wake = _wake  # a timer's way to end a ``wait`` early

    async def _more(self) -> None:
        """Wait until something arrives (or the end)."""
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    wait = _more  # until something arrives, the end, or ``wake``

    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.eof = True
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection to the agent is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection to the agent is closed")

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` of the received bytes, now (empty when none are buffered)."""
        buffer = self.buffer
        if len(buffer) <= limit:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:limit])
            del buffer[:limit]
        if self._read_paused and len(buffer) < READ_LIMIT and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def read_some(self, limit: int) -> bytes:
        """What has arrived, up to ``limit`` bytes; empty at the end."""
        while not self.buffer:
            if self.eof:
                return b""
            await self._more()
        return self.take(limit)

    async def read_head(self) -> bytes:
        """Everything up to and including the blank line that ends a head."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", start, MAX_HEAD + 4)
            if end >= 0:
                return self.take(end + 4)
            if len(self.buffer) >= MAX_HEAD + 4:
                raise AgentHttpError(f"the agent's answer has more than {MAX_HEAD} bytes of headers")
            if self.eof:
                if not self.buffer:
                    raise _StaleConnection
                raise AgentHttpError("the agent's answer ended inside its headers")
            start = max(0, len(self.buffer) - 3)
            await self._more()


class AgentResponse:
    """Status and headers of the agent's answer; the body is read with ``iter_raw`` (or ``read``), then ``aclose``."""

    def __init__(self, pool: AgentHttp, conn: _Conn, status: int, headers: dict[str, str], no_body: bool) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status_code = status
        self.headers = headers
        self._no_body = no_body
        self._complete = False

    def complete_body(self) -> bytes | None:
        """The whole body if it has already arrived (a small answer usually comes with its headers), else None.

        When it returns bytes, the body is consumed: ``iter_raw`` yields nothing more."""
        conn = self._conn
        if conn is None or self._complete:
            return None
        if self._no_body:
            self._complete = True
            return b""
        length = self.headers.get("content-length")
        if length is None or not length.isdigit() or "transfer-encoding" in self.headers:
            return None  # a bad length is reported by ``iter_raw``, as the stream breaks
        size = int(length)
        if len(conn.buffer) < size:
            return None
        if len(conn.buffer) > size:
            self._not_reusable()  # bytes nobody asked for follow the answer
        self._complete = True
        return conn.take(size)

    async def complete_body_soon(self, limit: int, within_s: float) -> bytes | None:
        """``complete_body``, waiting up to ``within_s`` for the rest of a body of at most ``limit`` bytes.

        An agent's server writes an answer's head and its body one after the other (uvicorn: two writes), and the
        gateway is often woken by the head alone. A small body is then a few microseconds behind: waiting for it
        lets the answer leave whole (one write to the client, no stream) instead of as a stream. An agent that
        declares a small length and then pauses only has its head forwarded ``within_s`` later."""
        whole = self.complete_body()
        conn = self._conn
        length = self.headers.get("content-length", "")
        if whole is not None or conn is None or self._complete or not length.isdigit() or int(length) > limit:
            return whole
        if "transfer-encoding" in self.headers:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while len(conn.buffer) < int(length) and not conn.eof:
            left = deadline - loop.time()
            if left <= 0:
                return None
            timer = loop.call_later(left, conn.wake)
            try:
                await conn.wait()
            finally:
                timer.cancel()
        return self.complete_body()

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed)."""
        conn = self._conn
        if conn is None:
            raise AgentHttpError("the response was already closed")
        if self._complete:
            return
        try:
            if self._no_body:
                pass
            elif "chunked" in self.headers.get("transfer-encoding", "").lower():
                async for piece in _chunked(conn, self._not_reusable):
                    yield piece
            elif "content-length" in self.headers:
                remaining = _length(self.headers["content-length"])
                while remaining:
                    piece = await conn.read_some(min(remaining, READ_SIZE))
                    if not piece:
                        raise AgentHttpError(f"the agent closed the connection {remaining} bytes before the end")
                    remaining -= len(piece)
                    yield piece
            else:
                while piece := await conn.read_some(READ_SIZE):
                    yield piece
                self._not_reusable()  # framed by the close
        except (OSError, ValueError) as exc:
            raise AgentHttpError(f"the agent's answer broke off: {type(exc).__name__}: {exc}") from exc
        self._complete = True

    def _not_reusable(self) -> None:
        self.headers["connection"] = "close"

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (the rest is dropped with the connection)."""
        data = bytearray()
        async for piece in self.iter_raw():
            data += piece
            if len(data) >= limit:
                break
        return bytes(data[:limit])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and self.headers.get("connection", "").lower() != "close":
            self._pool.release(conn)
        else:
            conn.close()


class AgentHttp:
    """Connections to one sandbox's socket; idle ones are kept for the next request."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._idle: list[_Conn] = []
        self._closed = False
        self._sweep: asyncio.TimerHandle | None = None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_unix_connection(_Conn, self.socket_path), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise AgentHttpError(f"cannot connect to the agent: {type(exc).__name__}: {exc}") from exc
        return conn

    def release(self, conn: _Conn) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or not conn.usable() or conn.buffer:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.idle_since + IDLE_CLOSE_S, self._close_idle)

    def _close_idle(self) -> None:
        """Close what sat unused for ``IDLE_CLOSE_S``; the pool is LIFO, so the oldest are at its start."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - IDLE_CLOSE_S
        stale = 0
        while stale < len(self._idle) and self._idle[stale].idle_since <= deadline:
            self._idle[stale].close()
            stale += 1
        del self._idle[:stale]
        if self._idle:
            self._sweep = loop.call_at(self._idle[0].idle_since + IDLE_CLOSE_S, self._close_idle)

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: Body = b"") -> AgentResponse:
        """Send the request; return once the answer's status and headers are in (the body is not read yet).

        A pooled connection that turns out to be closed by the agent is retried once on a fresh one, when the body
        can be sent again (bytes).
        """
        if self._closed:
            raise AgentHttpError("the sandbox's connections are closed")
        head = _head(method, path, headers, body)
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            if not isinstance(body, bytes):
                self._idle.append(conn)  # a one-shot body goes on a fresh connection: it cannot be replayed
                break
            try:
                return await self._exchange(conn, method, head, body)
            except _StaleConnection:
                conn.close()
        conn = await self._connect()
        try:
            return await self._exchange(conn, method, head, body)
        except _StaleConnection as exc:
            conn.close()
            raise AgentHttpError("the agent closed the connection without answering") from exc

    async def _exchange(self, conn: _Conn, method: str, head: bytes, body: Body) -> AgentResponse:
        try:
            try:
                if isinstance(body, bytes):
                    conn.write(head + body if body else head)
                else:
                    conn.write(head)
                    async for piece in body:
                        conn.write(piece)
                        await conn.drain()
                await conn.drain()
            except OSError as exc:
                raise _StaleConnection from exc  # nothing was answered yet
            while True:
                status, headers = _parse_head(await conn.read_head())
                if status >= 200 or status == 101:
                    break  # 1xx interim answers (100 Continue) are skipped
        except (_StaleConnection, AgentHttpError):
            conn.close()
            raise
        except (OSError, ValueError) as exc:
            conn.close()
            raise AgentHttpError(f"the agent did not answer: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()  # cancelled half-way: the connection's state is unknown
            raise
        no_body = method == "HEAD" or status in (204, 304)
        return AgentResponse(self, conn, status, headers, no_body)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if idle:
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)  # let the transports finish closing


def _head(method: str, path: str, headers: list[tuple[str, str]], body: Body) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: agent"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "content-length"]
    if isinstance(body, bytes) and (body or method not in ("GET", "HEAD")):
        lines.append(f"content-length: {len(body)}")
    else:
        lines += [f"content-length: {value}" for name, value in headers if name.lower() == "content-length"]
    text = "\r\n".join(lines) + "\r\n\r\n"
    # Each line adds exactly one CR and one LF (plus the blank line's): any more came inside a name or value.
    if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
        raise AgentHttpError("a header name or value holds a line break")
    return text.encode("latin-1")


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise AgentHttpError(f"the agent's answer is not HTTP/1.1: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise AgentHttpError(f"malformed header line from the agent: {line[:80]!r}")
        key = name.lower()
        text = value.strip()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers


def _length(value: str) -> int:
    if not value.isdigit():
        raise AgentHttpError(f"bad Content-Length from the agent: {value[:40]!r}")
    return int(value)


async def _chunked(conn: _Conn, leftover: Callable[[], None]) -> AsyncIterator[bytes]:
    """Chunked framing removed. Each read passes on every payload byte it brought at once, across chunk
    boundaries: a stream of small SSE events becomes a few larger writes to the client instead of one per event,
    and nothing waits for a chunk to be complete. ``leftover`` is called if bytes follow the final chunk."""
    buffer = bytearray(conn.take(READ_SIZE))
    pos = 0
    state = _SIZE
    remaining = 0
    while True:
        out = bytearray()
        while True:
            if state == _DATA:
                if pos == len(buffer):
                    break
                take = min(remaining, len(buffer) - pos)
                out += buffer[pos : pos + take]
                pos += take
                remaining -= take
                if remaining == 0:
                    state = _CRLF
                continue
            if state == _CRLF:
                if len(buffer) - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                pos += 2
                state = _SIZE
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_HEAD:
                    raise ValueError("chunk size or trailer line too long")
                break
            line = bytes(buffer[pos:end])
            pos = end + 2
            if state == _TRAILERS:
                if not line:
                    if pos < len(buffer) or conn.buffer:
                        leftover()
                    if out:
                        yield bytes(out)
                    return
                continue
            size = int(line.split(b";", 1)[0].strip(), 16)  # ValueError on garbage: reported as a broken answer
            if size < 0:
                raise ValueError("negative chunk size")
            state, remaining = (_TRAILERS, 0) if size == 0 else (_DATA, size)
        if out:
            yield bytes(out)
        del buffer[:pos]
        pos = 0
        piece = await conn.read_some(READ_SIZE)
        if not piece:
            raise AgentHttpError("the agent's answer broke off inside its chunked body")
        buffer += piece
