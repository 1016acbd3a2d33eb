"""Encoder for ``application/vnd.amazon.eventstream`` frames (the binary framing of InvokeAgentRuntimeCommand).

A frame is: prelude (total length u32, headers length u32), CRC32 of the prelude, headers, payload, CRC32 of
everything before it. Header values here are always strings (type 7: u16 length + UTF-8 bytes).
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    encoded_headers = _headers(headers)
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    head = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded_headers + payload
    return head + struct.pack("!I", zlib.crc32(head))


def event(document: dict[str, object], event_type: str = "chunk") -> bytes:
    """One ``event`` frame carrying a JSON member of the stream union (e.g. ``{"contentStart": {}}``)."""
    headers = {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"}
    return encode_frame(headers, json.dumps(document, ensure_ascii=False).encode("utf-8"))


def exception(exception_type: str, message: str) -> bytes:
    """An in-stream error; boto3 raises ``EventStreamError`` with ``Code == exception_type``."""
    headers = {
        ":message-type": "exception",
        ":exception-type": exception_type,
        ":content-type": "application/json",
    }
    return encode_frame(headers, json.dumps({"message": message}, ensure_ascii=False).encode("utf-8"))
