"""Opaque, tamper-evident ``nextToken`` values.

A token carries the last key of the page it ends and the listing it belongs to, signed with a secret of the
installation. A token that was edited, forged or taken from another listing fails the signature check and
becomes a ValidationException rather than a surprising page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from hangar.domain.errors import ValidationError

DEFAULT_PAGE = 100
MAX_PAGE = 100


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(secret: bytes, scope: str, last_key: str) -> str:
    payload = _b64(json.dumps({"s": scope, "k": last_key}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:18])
    return f"{payload}.{signature}"


def decode_token(secret: bytes, scope: str, token: str) -> str:
    """The last key carried by ``token``; ValidationException if it is not one this listing handed out."""
    invalid = ValidationError("Invalid nextToken: it was not issued for this listing", reason="FieldValidationFailed")
    payload, dot, signature = token.partition(".")
    if not dot or not payload or len(token) > 2048 or not token.isascii():  # tokens handed out are base64url
        raise invalid
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:18])
    if not hmac.compare_digest(expected, signature):
        raise invalid
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        raise invalid from None
    if not isinstance(data, dict) or data.get("s") != scope or not isinstance(data.get("k"), str):
        raise invalid
    return str(data["k"])  # checked to be a str above
