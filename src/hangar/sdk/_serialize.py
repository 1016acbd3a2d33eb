"""How handler results become bytes on the wire: JSON bodies and Server-Sent Events.

Results are JSON with raw UTF-8 (``ensure_ascii=False``) and the standard separators. Types JSON lacks are
converted on the way: pydantic-style models through ``model_dump``, dataclasses as dicts, sets as lists and
``bytes`` as base64 text. A value that still cannot be encoded is sent as its ``str()``, so a result never
turns into a failed request.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ERROR_EVENT_MESSAGE", "CompactJSONResponse", "error_event", "sse_event", "to_json_bytes"]

ERROR_EVENT_MESSAGE = "An error occurred during streaming"


def _convert(obj: Any) -> Any:
    """``json.dumps`` hook for the types JSON lacks; raising TypeError sends the caller to the ``str()`` fallback."""
    if hasattr(obj, "model_dump"):
        try:
            return obj.model_dump(mode="json")
        except TypeError:  # a model_dump without pydantic's ``mode`` keyword
            return obj.model_dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any, ensure_ascii: bool) -> str:
    return json.dumps(obj, ensure_ascii=ensure_ascii, default=_convert)


def to_json_bytes(obj: Any) -> bytes:
    """The UTF-8 JSON encoding of a handler result, never raising for odd values.

    Strings holding lone surrogates (legal in Python, not in UTF-8) are written as ``\\uXXXX`` escapes instead.
    """
    value = obj
    try:
        text = _dumps(value, ensure_ascii=False)
    except Exception:  # whatever the hooks or the encoder raise, fall back to str()
        try:
            value = str(obj)
        except Exception:
            value = {"error": "Serialization failed", "original_type": type(obj).__name__}
        text = _dumps(value, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _dumps(value, ensure_ascii=True).encode("ascii")


def sse_event(obj: Any) -> bytes:
    """One Server-Sent Event carrying ``obj`` as JSON: ``data: <json>`` and a blank line, nothing else."""
    return b"data: " + to_json_bytes(obj) + b"\n\n"


def error_event(exc: BaseException) -> bytes:
    """The last event of a stream whose generator raised; the HTTP status is already 200 by then."""
    return sse_event({"error": str(exc), "error_type": type(exc).__name__, "message": ERROR_EVENT_MESSAGE})


class CompactJSONResponse(JSONResponse):
    """Starlette's compact JSON, used for the contract's own bodies (errors, ping, debug actions).

    Unlike ``JSONResponse`` it never fails to render: an error message holding a lone surrogate is escaped and a
    value JSON cannot hold is written as its ``str()``, so a bad exception cannot turn into a bare 500.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError too
            return json.dumps(content, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")
