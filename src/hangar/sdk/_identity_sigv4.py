"""AWS credentials and Signature Version 4 for the identity helpers when botocore is not installed.

An agent environment may hold only starlette and uvicorn, yet ``requires_api_key`` must still reach the identity
service. So this module resolves credentials the way AWS SDKs do inside a runtime (environment variables, then the
container credentials endpoint a Hangar session serves) and signs requests per the published SigV4 algorithm.
Everything happens at call time: nothing is fetched, opened or started at import, so a warm template stays safe
to fork. The credential cache remembers the process it was filled in and is ignored in a forked child.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Mapping

__all__ = ["Credentials", "CredentialsError", "resolve_credentials", "sign_headers"]

ALGORITHM = "AWS4-HMAC-SHA256"
# Refresh container credentials this long before they expire (a request signed just before expiry may arrive late).
REFRESH_MARGIN_SECONDS = 300.0
CONTAINER_TIMEOUT_SECONDS = 5.0
_ECS_HOST = "http://169.254.170.2"
# botocore leaves these out of the signature too (proxies and tracing rewrite them).
_UNSIGNED_HEADERS = frozenset({"authorization", "user-agent", "expect", "x-amzn-trace-id"})
_UNRESERVED = "-_.~"


class CredentialsError(RuntimeError):
    """No usable AWS credentials: none in the environment and no (working) container credentials endpoint."""


class Credentials:
    """One AWS key pair, with the session token and expiry (unix seconds) of temporary credentials.

    A plain class rather than a dataclass: every agent imports the SDK, and building a dataclass costs more import
    time than this whole module otherwise does."""

    __slots__ = ("access_key", "expires_at", "secret_key", "token")

    def __init__(
        self, access_key: str, secret_key: str, token: str | None = None, expires_at: float | None = None
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.expires_at = expires_at  # None for long-lived keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        mine = (self.access_key, self.secret_key, self.token, self.expires_at)
        return mine == (other.access_key, other.secret_key, other.token, other.expires_at)

    # No __hash__: a class that defines __eq__ alone is unhashable (Python sets __hash__ to None), as it should be.

    def __repr__(self) -> str:  # never the secret or the token
        return f"Credentials(access_key={self.access_key!r}, expires_at={self.expires_at!r})"

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at - REFRESH_MARGIN_SECONDS


_cache_lock = threading.Lock()
_cached: tuple[int, str, Credentials] | None = None  # (pid, endpoint, credentials)


def resolve_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Environment keys first (read on every call, they are cheap), else container credentials, cached until near
    their ``Expiration``."""
    env = os.environ if environ is None else environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)
    endpoint = _container_endpoint(env)
    if endpoint is None:
        raise CredentialsError(
            "Unable to locate credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI (Hangar sets the latter in every session)"
        )
    global _cached
    with _cache_lock:
        now = time.time()
        if _cached is not None and _cached[:2] == (os.getpid(), endpoint) and _cached[2].fresh(now):
            return _cached[2]
        credentials = _fetch_container_credentials(endpoint, env)
        _cached = (os.getpid(), endpoint, credentials)
        return credentials


def _container_endpoint(env: Mapping[str, str]) -> str | None:
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if full:
        return full
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    return _ECS_HOST + relative if relative else None


def _authorization_token(env: Mapping[str, str]) -> str | None:
    """The token file wins over the variable (it can be rotated under a running process), as in botocore."""
    path = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token: str | None
    if path:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    else:
        token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or None
    if token is not None and ("\r" in token or "\n" in token):
        raise CredentialsError("the container authorization token contains a line break")
    return token


def _fetch_container_credentials(endpoint: str, env: Mapping[str, str]) -> Credentials:
    import urllib.error
    import urllib.request

    headers = {"Accept": "application/json"}
    token = _authorization_token(env)
    if token:
        headers["Authorization"] = token
    request = urllib.request.Request(endpoint, headers=headers, method="GET")
    # A direct opener: the credentials endpoint is local, a configured HTTP proxy must never see the token.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CONTAINER_TIMEOUT_SECONDS) as answer:
            document = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise CredentialsError(f"container credentials endpoint answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"container credentials endpoint failed: {exc}") from None
    try:
        return Credentials(
            document["AccessKeyId"],
            document["SecretAccessKey"],
            document.get("Token") or None,
            _parse_expiration(document.get("Expiration")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CredentialsError(f"container credentials endpoint answered an unusable document ({exc!r})") from None


_ISO8601 = r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*(Z|z|[+-]\d{2}:?\d{2})?"  # compiled on use


def _parse_expiration(value: object) -> float | None:
    """ISO 8601 as AWS writes it; fractions dropped and ``Z`` accepted (Python 3.10's fromisoformat reads neither)."""
    if value is None:
        return None
    found = re.fullmatch(_ISO8601, value.strip()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"Expiration {value!r} is not an ISO 8601 time")
    day, clock, zone = found.groups()
    if zone in (None, "Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    return datetime.datetime.fromisoformat(f"{day}T{clock}{zone}").timestamp()


# -- signing -------------------------------------------------------------------------------------------------


def _quote(text: str, safe: str = _UNRESERVED) -> str:
    from urllib.parse import quote

    return quote(text, safe=safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def sign_headers(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    now: float | None = None,
) -> dict[str, str]:
    """Return ``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the credentials carry one) and
    ``Authorization``.

    ``path`` is the path as sent on the wire (already percent-encoded once); it is encoded once more for the
    canonical request, as AWS specifies for every service but S3. ``query`` holds decoded pairs. ``headers`` must
    include ``Host`` exactly as sent; every header except the few proxies rewrite is signed.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    day = stamp[:8]
    signed = {name: value for name, value in headers.items() if name.lower() not in ("x-amz-date", "authorization")}
    signed["X-Amz-Date"] = stamp
    if credentials.token:
        signed["X-Amz-Security-Token"] = credentials.token
    canonical_headers: dict[str, list[str]] = {}
    for name, value in signed.items():
        lowered = name.lower()
        if lowered not in _UNSIGNED_HEADERS:
            canonical_headers.setdefault(lowered, []).append(" ".join(str(value).split()))
    names = sorted(canonical_headers)
    canonical_query = "&".join(
        f"{key}={value}" for key, value in sorted((_quote(key), _quote(value)) for key, value in query)
    )
    canonical_request = "\n".join(
        [
            method.upper(),
            _quote(path or "/", safe="/~"),
            canonical_query,
            "".join(f"{name}:{','.join(canonical_headers[name])}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(("AWS4" + credentials.secret_key).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    signed["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return signed
