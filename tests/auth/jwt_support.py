"""Helpers of the JWT tests: run the authorizer, describe a runtime's rules, forge tokens with chosen keys."""

from __future__ import annotations

import time
from typing import Any

import anyio
import jwt
import pytest

from hangar.auth.jwt import JwtAuthorizer, VerifiedToken
from hangar.domain.errors import HangarError
from tests.support.idp_common import RunningIdp


def rules_for(idp: RunningIdp, **overrides: Any) -> dict[str, Any]:
    """A customJWTAuthorizer that the IdP's agent-client tokens satisfy."""
    document: dict[str, Any] = {
        "discoveryUrl": idp.discovery_url,
        "allowedAudience": [idp.audience],
        "allowedClients": ["agent-client"],
        "allowedScopes": ["agent:invoke"],
    }
    document.update(overrides)
    return document


def authorize(authorizer: JwtAuthorizer, token: str, rules: dict[str, Any]) -> VerifiedToken:
    return anyio.run(authorizer.authorize, token, rules)


def refused(authorizer: JwtAuthorizer, token: str, rules: dict[str, Any], status: int, words: str) -> None:
    with pytest.raises(HangarError) as caught:
        authorize(authorizer, token, rules)
    assert caught.value.status == status, caught.value.message
    assert words.lower() in caught.value.message.lower(), caught.value.message


def forge(idp: RunningIdp, key: Any = None, kid: str | None = None, alg: str = "RS256", **claims: Any) -> str:
    """A token signed with the IdP's own key (default) or another one, with claims a real one would carry."""
    now = int(time.time())
    payload = {
        "iss": idp.issuer,
        "sub": "agent-client",
        "client_id": "agent-client",
        "aud": idp.audience,
        "scope": "agent:invoke",
        "iat": now,
        "exp": now + 600,
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    headers = {"kid": kid or idp.extra["kid"]}
    return jwt.encode(payload, key if key is not None else idp.extra["key"], algorithm=alg, headers=headers)
