"""Request bodies of the data plane: hashed for SigV4 while spooled, never held whole in memory when large.

An InvokeAgentRuntime payload may be 100,000,000 bytes. The body is read once, hashed as it arrives and kept in
memory only up to ``MEMORY_LIMIT``; past that it goes to an anonymous temporary file (gone even after a crash),
written and read back off the event loop, and is then streamed to the agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from starlette.requests import ClientDisconnect, Request

from hangar.domain.errors import ValidationError

MAX_PAYLOAD = 100_000_000
MAX_JSON_BODY = 1024 * 1024  # stopruntimesession and commands bodies are small JSON documents
MEMORY_LIMIT = 1024 * 1024
FILE_CHUNK = 1024 * 1024


class SpooledBody:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir  # the spool directory is named only for a body that needs it (a path costs ~2 us)
        self.size = 0
        self._hash = hashlib.sha256()
        self._memory = bytearray()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._file: IO[bytes] | None = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None:
            self._hash.update(chunk)  # small so far: hashed inline
            self._memory += chunk
            if len(self._memory) > MEMORY_LIMIT:
                spool_dir = self.data_dir / "spool"
                spool_dir.mkdir(parents=True, exist_ok=True)
                spool = await asyncio.to_thread(_temporary_file, spool_dir)
                self._file = spool
                data, self._memory = bytes(self._memory), bytearray()
                await asyncio.to_thread(spool.write, data)
            return
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= FILE_CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if self._file is None or not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        await asyncio.to_thread(_hash_and_write, self._hash, self._file, data)

    async def finish(self) -> None:
        await self._flush()

    def content(self) -> bytes | AsyncIterator[bytes]:
        """What to send to the agent: the bytes, or an async reader of the spool file."""
        if self._file is None:
            return bytes(self._memory)
        return self._read_file(self._file)

    async def _read_file(self, file: IO[bytes]) -> AsyncIterator[bytes]:
        await asyncio.to_thread(file.seek, 0)
        while True:
            chunk = await asyncio.to_thread(file.read, FILE_CHUNK)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = bytearray()


def _temporary_file(directory: Path) -> IO[bytes]:
    """An anonymous spool file (typed: ``TemporaryFile``'s overloads do not survive ``to_thread``)."""
    return tempfile.TemporaryFile(dir=directory)


def _hash_and_write(digest: hashlib._Hash, file: IO[bytes], data: bytes) -> None:
    digest.update(data)
    file.write(data)


async def spool_body(request: Request, data_dir: Path, limit: int = MAX_PAYLOAD) -> SpooledBody:
    """Read the whole body (hashing it), refusing more than ``limit`` bytes, declared or streamed; a large one is
    spooled under ``data_dir``/spool.

    The ASGI messages are read straight from ``receive`` (what ``Request.stream`` does, without its async
    generator): a warm invoke's body is one message."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValidationError(f"The payload exceeds the maximum size of {limit} bytes", reason="CannotParse")
    body = SpooledBody(data_dir)
    receive = request.receive
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            if chunk:
                if body.size + len(chunk) > limit:
                    raise ValidationError(
                        f"The payload exceeds the maximum size of {limit} bytes", reason="CannotParse"
                    )
                await body.write(chunk)
            if not message.get("more_body", False):
                break
        await body.finish()
    except ClientDisconnect as exc:
        body.close()
        raise ValidationError("The client disconnected while sending the payload", reason="CannotParse") from exc
    except BaseException:
        body.close()
        raise
    return body


async def read_json_body(request: Request) -> tuple[bytes, dict[str, object]]:
    """A small JSON object body: (raw bytes for the SigV4 hash, parsed object); empty body means ``{}``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise ValidationError(f"The request body exceeds {MAX_JSON_BODY} bytes", reason="CannotParse")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_JSON_BODY:
                raise ValidationError(f"The request body exceeds {MAX_JSON_BODY} bytes", reason="CannotParse")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ValidationError("The client disconnected while sending the request", reason="CannotParse") from exc
    raw = b"".join(chunks)
    if not raw.strip():
        return raw, {}
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise ValidationError("The request body is not valid JSON", reason="CannotParse") from exc
    if not isinstance(parsed, dict):
        raise ValidationError("The request body must be a JSON object", reason="CannotParse")
    return raw, parsed
