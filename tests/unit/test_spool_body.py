"""gateway/dataplane/body.py ``spool_body``: the invoke payload read straight from ASGI ``receive``.

It reads the messages itself (not through ``Request.stream``), so what Starlette did for it is pinned here: every
message's body in order, the end at ``more_body`` false, a disconnect refused as a 400, the size cap while
streaming, and a body past ``MEMORY_LIMIT`` spooled to a file under the data directory and read back whole.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from hangar.domain.errors import ValidationError
from hangar.gateway.dataplane import body as body_module
from hangar.gateway.dataplane.body import spool_body


def _request(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return Request({"type": "http", "method": "POST", "headers": headers or []}, receive)


async def _content(found: bytes | AsyncIterator[bytes]) -> bytes:
    if isinstance(found, bytes):
        return found
    return b"".join([chunk async for chunk in found])


def test_one_message() -> None:
    async def run() -> None:
        got = await spool_body(_request([{"type": "http.request", "body": b"hello"}]), Path("/nonexistent"))
        assert got.content() == b"hello" and got.size == 5
        assert got.sha256 == hashlib.sha256(b"hello").hexdigest()

    asyncio.run(run())


def test_many_messages_in_order_and_an_empty_body() -> None:
    async def run() -> None:
        parts = [b"a", b"", b"bc", b"d"]
        messages = [{"type": "http.request", "body": part, "more_body": True} for part in parts]
        messages.append({"type": "http.request", "more_body": False})
        got = await spool_body(_request(messages), Path("/nonexistent"))
        assert got.content() == b"abcd"
        empty = await spool_body(_request([{"type": "http.request"}]), Path("/nonexistent"))
        assert empty.content() == b"" and empty.sha256 == hashlib.sha256(b"").hexdigest()

    asyncio.run(run())


def test_a_disconnect_while_sending_is_a_validation_error() -> None:
    messages = [{"type": "http.request", "body": b"part", "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ValidationError, match="disconnected"):
        asyncio.run(spool_body(_request(messages), Path("/nonexistent")))


def test_the_cap_holds_declared_and_streamed() -> None:
    declared = _request([], headers=[(b"content-length", b"11")])
    with pytest.raises(ValidationError, match="maximum size of 10"):
        asyncio.run(spool_body(declared, Path("/nonexistent"), limit=10))
    streamed = [{"type": "http.request", "body": b"123456", "more_body": True}] * 2
    with pytest.raises(ValidationError, match="maximum size of 10"):
        asyncio.run(spool_body(_request(streamed), Path("/nonexistent"), limit=10))


def test_a_large_body_is_spooled_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_module, "MEMORY_LIMIT", 8)
    monkeypatch.setattr(body_module, "FILE_CHUNK", 4)
    chunks = [bytes([65 + n]) * 5 for n in range(5)]
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def run() -> None:
        got = await spool_body(_request(messages), tmp_path)
        try:
            assert (tmp_path / "spool").is_dir()
            assert not isinstance(got.content(), bytes)
            assert await _content(got.content()) == b"".join(chunks)
            assert got.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
        finally:
            got.close()

    asyncio.run(run())
