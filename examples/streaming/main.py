"""Streaming agent: yields Server-Sent Events, from a sync or an async generator.

The payload picks the flavour: ``{"mode": "async", "count": 3}`` streams from an async generator,
anything else from a plain generator. Each event is one ``data: <json>`` frame.
Run it with ``python examples/streaming/main.py`` (port 8080, or ``$PORT``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()

MAX_CHUNKS = 1000


def count_from(payload: Any) -> int:
    requested = payload.get("count", 3) if isinstance(payload, dict) else 3
    return max(0, min(int(requested), MAX_CHUNKS))


def sync_chunks(prompt: str, count: int) -> Iterator[dict[str, Any]]:
    for index in range(count):
        yield {"index": index, "partial": f"{prompt} #{index}"}
    yield {"complete": True, "mode": "sync"}


async def async_chunks(prompt: str, count: int) -> AsyncIterator[dict[str, Any]]:
    for index in range(count):
        await asyncio.sleep(0)
        yield {"index": index, "partial": f"{prompt} #{index}"}
    yield {"complete": True, "mode": "async"}


@app.entrypoint
def invoke(payload: Any) -> Iterator[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
    prompt = str(payload.get("prompt", "chunk")) if isinstance(payload, dict) else "chunk"
    if isinstance(payload, dict) and payload.get("mode") == "async":
        return async_chunks(prompt, count_from(payload))
    return sync_chunks(prompt, count_from(payload))


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
