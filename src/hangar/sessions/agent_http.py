"""A small HTTP/1.1 client for the agent behind a sandbox's Unix socket, pooled per sandbox.

Why not httpx: on the warm-invoke path its per-request machinery cost about 1 ms, more than the agent itself. The
agent is one known peer on a local socket, so this client does only what that needs: one request at a time per
connection, keep-alive, ``Content-Length`` or chunked or read-to-close bodies, streamed as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
_SIZE, _DATA, _CRLF, _TRAILERS = range(4)  # states of the chunked decoder
MAX_IDLE = 32
CONNECT_TIMEOUT_S = 10.0
Body = bytes | AsyncIterator[bytes]


class AgentHttpError(Exception):
    """The agent could not be reached or did not speak HTTP/1.1 properly."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class AgentResponse:
    """Status and headers of the agent's answer; the body is read with ``iter_raw`` (or ``read``), then ``aclose``."""

    def __init__(self, pool: AgentHttp, conn: _Connection, status: int, headers: dict[str, str], no_body: bool) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status_code = status
        self.headers = headers
        self._no_body = no_body
        self._complete = False

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed)."""
        conn = self._conn
        if conn is None:
            raise AgentHttpError("the response was already closed")
        reader = conn.reader
        try:
            if self._no_body:
                pass
            elif "chunked" in self.headers.get("transfer-encoding", "").lower():
                async for piece in _chunked(reader, self._not_reusable):
                    yield piece
            elif "content-length" in self.headers:
                remaining = _length(self.headers["content-length"])
                while remaining:
                    piece = await reader.read(min(remaining, READ_SIZE))
                    if not piece:
                        raise AgentHttpError(f"the agent closed the connection {remaining} bytes before the end")
                    remaining -= len(piece)
                    yield piece
            else:
                while piece := await reader.read(READ_SIZE):
                    yield piece
                self.headers["connection"] = "close"  # framed by the close: not reusable
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
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
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path, limit=MAX_HEAD), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise AgentHttpError(f"cannot connect to the agent: {type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer)

    def release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or not conn.usable():
            conn.close()
        else:
            self._idle.append(conn)

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

    async def _exchange(self, conn: _Connection, method: str, head: bytes, body: Body) -> AgentResponse:
        try:
            try:
                if isinstance(body, bytes):
                    conn.writer.write(head + body)
                else:
                    conn.writer.write(head)
                    async for piece in body:
                        conn.writer.write(piece)
                        await conn.writer.drain()
                await conn.writer.drain()
            except OSError as exc:
                raise _StaleConnection from exc  # nothing was answered yet
            while True:
                try:
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        raise _StaleConnection from exc
                    raise AgentHttpError("the agent's answer ended inside its headers") from exc
                status, headers = _parse_head(raw)
                if status >= 200 or status == 101:
                    break  # 1xx interim answers (100 Continue) are skipped
        except (_StaleConnection, AgentHttpError):
            conn.close()
            raise
        except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            raise AgentHttpError(f"the agent did not answer: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()  # cancelled half-way: the connection's state is unknown
            raise
        no_body = method == "HEAD" or status in (204, 304)
        return AgentResponse(self, conn, status, headers, no_body)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


class _StaleConnection(Exception):
    """The connection ended before a single byte of the answer: safe to retry a replayable request."""


def _head(method: str, path: str, headers: list[tuple[str, str]], body: Body) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: agent"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "content-length"]
    if isinstance(body, bytes) and (body or method not in ("GET", "HEAD")):
        lines.append(f"content-length: {len(body)}")
    else:
        lines += [f"content-length: {value}" for name, value in headers if name.lower() == "content-length"]
    text = "\r\n".join(lines) + "\r\n\r\n"
    if any(c in value for _, value in headers for c in "\r\n"):
        raise AgentHttpError("a header value holds a line break")
    return text.encode("latin-1")


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise AgentHttpError(f"the agent's answer is not HTTP/1.1: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise AgentHttpError(f"malformed header line from the agent: {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if parts[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers


def _length(value: str) -> int:
    if not value.isdigit():
        raise AgentHttpError(f"bad Content-Length from the agent: {value[:40]!r}")
    return int(value)


async def _chunked(reader: asyncio.StreamReader, leftover: Callable[[], None]) -> AsyncIterator[bytes]:
    """Chunked framing removed. Each read passes on every payload byte it brought at once, across chunk
    boundaries: a stream of small SSE events becomes a few larger writes to the client instead of one per event,
    and nothing waits for a chunk to be complete. ``leftover`` is called if bytes follow the final chunk."""
    buffer = bytearray()
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
                    if pos < len(buffer):
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
        piece = await reader.read(READ_SIZE)
        if not piece:
            raise asyncio.IncompleteReadError(bytes(buffer), None)
        buffer += piece
