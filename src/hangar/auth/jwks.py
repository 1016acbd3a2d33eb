"""OIDC discovery and signing keys for the JWT authorizer: fetched with hard limits, cached, refreshed on rotation.

Per discovery URL we keep the issuer and its JSON Web Key Set. Keys are re-read every ``REFRESH_AFTER_S``; a token
naming an unknown ``kid`` triggers one early re-read, at most once per ``UNKNOWN_KID_REFETCH_S`` (so a flood of
made-up kids cannot turn us into a load generator against the IdP). If the IdP is unreachable we keep using keys
fetched less than ``MAX_STALE_S`` ago; with none, verification fails closed, and for ``FAILURE_BACKOFF_S`` after a
failed fetch tokens are refused without asking the IdP again (a dead IdP costs one wait per 5 s, not one per
request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

log = logging.getLogger("hangar.auth")

MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
FETCH_DEADLINE_S = 10.0  # whole fetch, however slowly the bytes drip in
REFRESH_AFTER_S = 900.0
MAX_STALE_S = 6 * 3600.0
UNKNOWN_KID_REFETCH_S = 30.0
FAILURE_BACKOFF_S = 5.0  # after a failed fetch with nothing cached, refuse at once for this long instead of retrying


class KeySetError(Exception):
    """The IdP's discovery document or key set could not be used (unreachable, too big, malformed)."""


class UnknownKeyError(KeySetError):
    """The token names a key the IdP does not publish (even after a re-read)."""


@dataclass
class _IssuerKeys:
    issuer: str
    jwks_uri: str
    keys: list[dict[str, Any]]
    fetched_at: float
    refetched_at: float = field(default=0.0)


class JwksCache:
    """Issuer and signing keys per discovery URL, shared by every runtime that names the same IdP."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _IssuerKeys] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, tuple[float, str]] = {}

    async def resolve(self, discovery_url: str, kid: str | None) -> tuple[str, dict[str, Any]]:
        """The issuer of ``discovery_url`` and the JWK that ``kid`` names (or the only key, when no kid)."""
        entry = await self._current(discovery_url)
        found = _select(entry.keys, kid)
        if found is not None:
            return entry.issuer, found
        entry = await self._refetch_for_unknown_kid(discovery_url, entry)
        found = _select(entry.keys, kid)
        if found is None:
            raise UnknownKeyError(
                f"The identity provider publishes no signing key with kid {kid!r}"
                if kid
                else "The token has no kid and the identity provider publishes more than one signing key"
            )
        return entry.issuer, found

    async def _current(self, discovery_url: str) -> _IssuerKeys:
        entry = self._entries.get(discovery_url)
        if entry is not None and self._clock() - entry.fetched_at < REFRESH_AFTER_S:
            return entry
        async with self._lock(discovery_url):
            entry = self._entries.get(discovery_url)
            if entry is not None and self._clock() - entry.fetched_at < REFRESH_AFTER_S:
                return entry
            if entry is None and discovery_url in self._failures:
                failed_at, reason = self._failures[discovery_url]
                if self._clock() - failed_at < FAILURE_BACKOFF_S:
                    raise KeySetError(reason)
            try:
                fresh = await _fetch(discovery_url, self._clock())
            except KeySetError as exc:
                if entry is not None and self._clock() - entry.fetched_at < MAX_STALE_S:
                    log.warning("could not refresh keys from %s; using the ones fetched earlier", discovery_url)
                    return entry
                self._failures[discovery_url] = (self._clock(), str(exc))
                raise
            self._failures.pop(discovery_url, None)
            self._entries[discovery_url] = fresh
            return fresh

    async def _refetch_for_unknown_kid(self, discovery_url: str, entry: _IssuerKeys) -> _IssuerKeys:
        async with self._lock(discovery_url):
            current = self._entries.get(discovery_url, entry)
            if current is not entry:  # someone refreshed while we waited
                return current
            now = self._clock()
            if now - entry.refetched_at < UNKNOWN_KID_REFETCH_S:
                return entry
            entry.refetched_at = now
            try:
                fresh = await _fetch(discovery_url, now)
            except KeySetError:
                log.warning("could not re-read keys from %s after an unknown kid", discovery_url)
                return entry
            fresh.refetched_at = now
            self._entries[discovery_url] = fresh
            return fresh

    def _lock(self, discovery_url: str) -> asyncio.Lock:
        return self._locks.setdefault(discovery_url, asyncio.Lock())


def _select(keys: list[dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    signing = [k for k in keys if k.get("use", "sig") == "sig"]
    if kid is None:
        return signing[0] if len(signing) == 1 else None
    for key in signing:
        if key.get("kid") == kid:
            return key
    return None


async def _fetch(discovery_url: str, now: float) -> _IssuerKeys:
    try:
        with anyio.fail_after(FETCH_DEADLINE_S):
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
                discovery = await _get_json(client, discovery_url)
                issuer = discovery.get("issuer")
                jwks_uri = discovery.get("jwks_uri")
                if not isinstance(issuer, str) or not issuer:
                    raise KeySetError(f"{discovery_url} has no 'issuer'")
                if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
                    raise KeySetError(f"{discovery_url} has no usable 'jwks_uri'")
                document = await _get_json(client, jwks_uri)
    except TimeoutError:
        raise KeySetError(f"{discovery_url} did not answer within {FETCH_DEADLINE_S:.0f}s") from None
    except httpx.HTTPError as exc:
        raise KeySetError(f"{discovery_url} is unreachable ({type(exc).__name__})") from None
    keys = document.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise KeySetError(f"{jwks_uri} is not a JSON Web Key Set")
    return _IssuerKeys(issuer=issuer, jwks_uri=jwks_uri, keys=keys, fetched_at=now)


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    if urlsplit(url).scheme not in ("http", "https"):
        raise KeySetError(f"{url} is not an http(s) URL")
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise KeySetError(f"{url} answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
            raise KeySetError(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise KeySetError(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(bytes(body))
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise KeySetError(f"{url} is not JSON") from None
    if not isinstance(document, dict):
        raise KeySetError(f"{url} is not a JSON object")
    return document
