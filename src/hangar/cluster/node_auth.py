"""The signature on every gateway → node request: ``X-Hangar-Node-Auth: <unix seconds>:<hex HMAC-SHA256>``.

The MAC covers ``f"{ts}\\n{METHOD}\\n{path}"`` under the cluster key (``ray_link.cluster_key``); ``path`` is the
request's path as sent on the request line (percent-encoding kept), without the query string. A node accepts a
timestamp within ``SKEW_S`` of its own clock. Only whoever can read the cluster's KV (a Ray driver with the
cluster's token) can sign.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Hangar-Node-Auth"
SKEW_S = 60


def sign(key: bytes, method: str, path: str, now: float | None = None) -> str:
    """The header value for one request."""
    ts = int(time.time() if now is None else now)
    mac = hmac.new(key, f"{ts}\n{method.upper()}\n{path}".encode(), hashlib.sha256).hexdigest()
    return f"{ts}:{mac}"


def verify(key: bytes, value: str | None, method: str, path: str, now: float | None = None) -> str | None:
    """None when ``value`` signs this request now; otherwise why not (for the node's log, never the caller)."""
    if not value:
        return "no signature"
    ts_text, _, mac = value.partition(":")
    if not ts_text.isdigit() or len(mac) != 64:
        return "malformed signature"
    current = time.time() if now is None else now
    if abs(current - int(ts_text)) > SKEW_S:
        return "stale signature"
    expected = hmac.new(key, f"{ts_text}\n{method.upper()}\n{path}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac.lower()):
        return "wrong signature"
    return None
