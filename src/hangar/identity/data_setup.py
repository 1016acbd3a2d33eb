"""Build the identity data plane on the control side's vault and directory (``identity/setup.py``).

What it needs from elsewhere comes in as plain callables from the composition root (``hangar/services.py``), so this
package imports neither the control plane nor the auth package: ``authorize_jwt`` checks a token against a
``customJWTAuthorizer`` document and returns its subject, ``runtime_authorizer`` names the authorizer of the
runtime a workload identity belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread

from hangar.domain.errors import AccessDeniedError, UnauthorizedError
from hangar.identity.dataplane import IdentityDataPlane, UserJwtVerifier
from hangar.identity.oauth import OAuthClient
from hangar.identity.setup import Identity
from hangar.identity.shared_keys import record_wat_key, require_wat_key
from hangar.identity.tokens import WorkloadTokens, load_key
from hangar.identity.vault import SealedColumn
from hangar.store.identity_tokens import IdentityTokenStore, TokenKey
from hangar.store.tables import identity_oauth_sessions, identity_tokens

AuthorizeJwt = Callable[[str, dict[str, Any]], Awaitable[str | None]]  # token, authorizer -> subject
RuntimeAuthorizer = Callable[[str], "dict[str, Any] | None"]  # workload identity name -> customJWTAuthorizer


def build_identity_data(
    data_dir: Path,
    identity: Identity,
    authorize_jwt: AuthorizeJwt,
    runtime_authorizer: RuntimeAuthorizer,
    *,
    node: bool = False,
) -> IdentityDataPlane:
    """The data plane; its sealed tables join the vault's rotation. A gateway creates ``wat.key`` if needed and
    records its fingerprint in the store; a ``node`` must have been given that same key (``shared_keys.py``)."""
    key_file = data_dir / "identity" / "wat.key"
    store = identity.rotation.store
    if node:
        key = require_wat_key(key_file, store)
    else:
        key = load_key(key_file)
        record_wat_key(store, key)
    tokens = WorkloadTokens(key, identity.box)
    for column in sealed_columns():
        identity.register_sealed(column)
    return IdentityDataPlane(
        tokens=tokens,
        directory=identity.directory,
        box=identity.box,
        store=IdentityTokenStore(identity.rotation.store),
        oauth=OAuthClient(),
        verify_user_jwt=user_jwt_verifier(authorize_jwt, runtime_authorizer),
    )


def sealed_columns() -> list[SealedColumn]:
    """Every column this package seals, with its context, so a vault key rotation re-seals them too."""

    def token_context(part: str) -> Callable[[Any], str]:
        def context(row: Any) -> str:
            key = TokenKey(row["workload"], row["user_id"], row["provider"], row["flow"], row["scopes_key"])
            return key.context(part)

        return context

    def session_context(part: str) -> Callable[[Any], str]:
        return lambda row: f"identity-session:{row['session_id']}:{part}"

    columns = [
        SealedColumn(identity_tokens, "access_token_sealed", token_context("access")),
        SealedColumn(identity_tokens, "refresh_token_sealed", token_context("refresh")),
    ]
    for column, part in (
        ("verifier_sealed", "verifier"),
        ("custom_state_sealed", "custom-state"),
        ("access_token_sealed", "access"),
        ("refresh_token_sealed", "refresh"),
    ):
        columns.append(SealedColumn(identity_oauth_sessions, column, session_context(part)))
    return columns


def user_jwt_verifier(authorize_jwt: AuthorizeJwt, runtime_authorizer: RuntimeAuthorizer) -> UserJwtVerifier:
    """A user JWT is trusted when the runtime that owns the workload identity (same id) has a customJWTAuthorizer
    that accepts it. Admins may also name a workload without one: then the token's own issuer (OIDC discovery at
    ``iss``) must verify it. A session never gets that fallback (it could mint tokens from an IdP of its own)."""

    async def verify(workload: str, token: str, admin: bool) -> str:
        authorizer = await anyio.to_thread.run_sync(runtime_authorizer, workload)
        if authorizer is None:
            if not admin:
                raise AccessDeniedError("The workload identity's runtime has no JWT authorizer to verify user tokens")
            authorizer = {"discoveryUrl": _issuer_discovery(token)}
        subject = await authorize_jwt(token, authorizer)
        if not subject:
            raise UnauthorizedError("The user token has no subject")
        return subject

    return verify


def _issuer_discovery(token: str) -> str:
    import jwt as pyjwt

    try:
        issuer = pyjwt.decode(token, options={"verify_signature": False}).get("iss")
    except pyjwt.PyJWTError:
        raise UnauthorizedError("The user token is malformed") from None
    if not isinstance(issuer, str) or not issuer.startswith(("http://", "https://")):
        raise UnauthorizedError("The user token names no http(s) issuer")
    return issuer.rstrip("/") + "/.well-known/openid-configuration"
