"""Reading the invocation payload: any JSON value, whatever the Content-Type says.

The reference SDK never checks Content-Type (boto3 sends ``application/x-amz-json``-ish types or none), so neither
do we. Large bodies are decoded in the thread pool so that a 100 MB payload does not freeze ``/ping``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from starlette.requests import Request

__all__ = ["PayloadError", "read_payload"]

_INLINE_LIMIT = 64 * 1024  # bytes decoded on the server loop; anything larger goes to a thread


class PayloadError(Exception):
    """The body is not JSON; ``body`` is the 400 response the contract prescribes."""

    def __init__(self, error: str, details: str) -> None:
        super().__init__(f"{error}: {details}")
        self.body = {"error": error, "details": details}


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PayloadError("Invalid JSON", str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise PayloadError("Invalid encoding", str(exc)) from exc
    except RecursionError as exc:
        raise PayloadError("Invalid JSON", "nesting too deep") from exc


async def read_payload(request: Request) -> Any:
    raw = await request.body()
    if len(raw) <= _INLINE_LIMIT:
        return _decode(raw)
    return await anyio.to_thread.run_sync(_decode, raw)
