"""Workload access tokens (WAT): minted by Hangar, bound to a workload identity, an optional user and an expiry.

A WAT is a compact JWT signed with HS256 under a key kept in ``<data_dir>/identity/wat.key`` (0600, created on first
start). Minting is a dictionary and one HMAC: the invoke path mints one per invocation, so no database write and no
encryption happens here. When the WAT was minted for a user JWT (GetWorkloadAccessTokenForJWT, or a Bearer-authorized
invocation), that JWT travels sealed with the vault's box (claim ``utk``) so token exchange can use it later without
exposing it to whoever holds the WAT.

Verification refuses anything not signed with this installation's key, any other algorithm (``none``, RS*, ...),
an unknown issuer or audience, and an expired token: those are ``UnauthorizedException`` (the token cannot be
trusted). A valid token presented by the wrong workload is the caller's business (``dataplane.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt as pyjwt

from hangar.domain.errors import UnauthorizedError
from hangar.identity.ports import SecretBox

ISSUER = "hangar:identity"
AUDIENCE = "hangar:workload-access-token"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 3600
MAX_TOKEN_CHARS = 131072
USER_TOKEN_CONTEXT = "wat:user-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')


@dataclass(frozen=True)
class WatClaims:
    """What a verified WAT says: whose workload, which user (or none), until when, and its unique id."""

    workload: str
    user_id: str | None
    expires_at: float
    token_id: str
    user_token_sealed: bytes | None = field(default=None, repr=False)


def load_key(path: Path) -> bytes:
    """The signing key at ``path``; created (32 random bytes, 0600, never overwritten) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        key = path.read_bytes()
        if len(key) < 32:
            raise RuntimeError(f"{path} holds a key shorter than 32 bytes; remove it to make a new one") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class WorkloadTokens:
    """Mint and verify WATs; one instance per server (the key is read once)."""

    def __init__(
        self,
        key: bytes,
        box: SecretBox | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._box = box
        self.ttl_s = ttl_s
        self._clock = clock

    def mint(self, workload: str, user_id: str | None, *, user_token: str | None = None) -> str:
        """A fresh WAT for ``workload`` (and ``user_id``); ``user_token`` is the user's JWT, kept sealed inside."""
        now = int(self._clock())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "wl": workload,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": os.urandom(16).hex(),
        }
        if user_id is not None:
            claims["sub"] = user_id
        if user_token is not None and self._box is not None:
            sealed = self._box.seal(user_token.encode(), f"{USER_TOKEN_CONTEXT}:{workload}:{user_id or ''}")
            claims["utk"] = base64.urlsafe_b64encode(sealed).decode()
        # A plain compact JWS (what pyjwt.encode makes, without its generic checks): mint is on the invoke path.
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{_HEADER}.{payload}"
        signature = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def verify(self, token: str) -> WatClaims:
        """The claims of a WAT this installation minted and that has not expired; UnauthorizedError otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise UnauthorizedError("The workload access token is missing or too large")
        if not token.isascii():  # a compact JWS is ASCII; pyjwt would fail to encode a lone surrogate (a 500)
            raise UnauthorizedError("The workload access token is malformed")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise UnauthorizedError("The workload access token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise UnauthorizedError("The workload access token was not issued by this Hangar")
        try:
            claims = pyjwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=0,
                options={"require": ["exp", "iat", "iss", "aud", "jti", "wl"]},
            )
        except pyjwt.ExpiredSignatureError:
            raise UnauthorizedError("The workload access token has expired") from None
        except pyjwt.PyJWTError:
            raise UnauthorizedError("The workload access token was not issued by this Hangar") from None
        workload, user, jti = claims.get("wl"), claims.get("sub"), claims.get("jti")
        if (
            not isinstance(workload, str)
            or not isinstance(jti, str)
            or (user is not None and not isinstance(user, str))
        ):
            raise UnauthorizedError("The workload access token is malformed")
        sealed = claims.get("utk")
        return WatClaims(
            workload=workload,
            user_id=user,
            expires_at=float(claims["exp"]),
            token_id=jti,
            user_token_sealed=base64.urlsafe_b64decode(sealed) if isinstance(sealed, str) else None,
        )

    def user_token(self, claims: WatClaims) -> str | None:
        """The user JWT the WAT was minted for, when it carries one."""
        if claims.user_token_sealed is None or self._box is None:
            return None
        context = f"{USER_TOKEN_CONTEXT}:{claims.workload}:{claims.user_id or ''}"
        try:
            return self._box.open(claims.user_token_sealed, context).decode()
        except Exception:
            raise UnauthorizedError("The workload access token's user token cannot be read") from None
