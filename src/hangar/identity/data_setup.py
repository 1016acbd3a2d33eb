"""Wire the identity data plane into ``Services`` (after the control side set ``services.identity``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from hangar.domain.errors import AccessDeniedError, HangarError, InternalError, UnauthorizedError
from hangar.identity.dataplane import IdentityDataPlane
from hangar.identity.oauth import OAuthClient
from hangar.identity.tokens import WorkloadTokens, load_key
from hangar.identity.vault import SealedColumn
from hangar.store import runtimes as runtime_rows
from hangar.store.identity_tokens import IdentityTokenStore, TokenKey
from hangar.store.tables import identity_oauth_sessions, identity_tokens
from hangar.store.transactions import Store

if TYPE_CHECKING:
    from hangar.services import Services


def wire(services: Services) -> None:
    identity = getattr(services, "identity", None)
    if identity is None:
        raise InternalError("the identity data plane needs services.identity (directory and box) wired first")
    key = load_key(services.settings.data_dir / "identity" / "wat.key")
    tokens = WorkloadTokens(key, identity.box)
    rotation = getattr(identity, "rotation", None)
    store = getattr(rotation, "store", None)
    if rotation is not None and hasattr(identity, "register_sealed"):
        for column in sealed_columns():
            identity.register_sealed(column)
    services.identity_data = IdentityDataPlane(
        tokens=tokens,
        directory=identity.directory,
        box=identity.box,
        store=IdentityTokenStore(store if isinstance(store, Store) else services.engine),
        oauth=OAuthClient(),
        verify_user_jwt=_user_jwt_verifier(services),
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


def _user_jwt_verifier(services: Services):  # type: ignore[no-untyped-def]
    """A user JWT is trusted when the runtime that owns the workload identity (same id) has a customJWTAuthorizer
    that accepts it. Admins may also name a workload without one: then the token's own issuer (OIDC discovery at
    ``iss``) must verify it. A session never gets that fallback (it could mint tokens from an IdP of its own)."""

    async def verify(workload: str, token: str, admin: bool) -> str:
        authorizer = await anyio.to_thread.run_sync(_runtime_authorizer, services, workload)
        if authorizer is None:
            if not admin:
                raise AccessDeniedError("The workload identity's runtime has no JWT authorizer to verify user tokens")
            authorizer = {"discoveryUrl": _issuer_discovery(token)}
        if services.jwt is None:
            raise InternalError("The JWT verifier is not configured")
        verified = await services.jwt.authorize(token, authorizer)
        if not verified.subject:
            raise UnauthorizedError("The user token has no subject")
        return verified.subject

    return verify


def _runtime_authorizer(services: Services, workload: str) -> dict[str, Any] | None:
    """The ``customJWTAuthorizer`` of the runtime whose id names this workload identity: the one its DEFAULT
    endpoint serves (what invocations check), else its newest version's (not served yet), else none."""
    if services.control is not None:
        try:
            return services.control.resolve_target(workload, None, services.settings.account_id).jwt_authorizer
        except HangarError:
            pass
    try:
        version = Store(services.engine).read(lambda conn: runtime_rows.newest_version(conn, workload))
    except HangarError:
        return None
    if version is None:
        return None
    return (version.spec.authorizer or {}).get("customJWTAuthorizer")


def _issuer_discovery(token: str) -> str:
    import jwt as pyjwt

    try:
        issuer = pyjwt.decode(token, options={"verify_signature": False}).get("iss")
    except pyjwt.PyJWTError:
        raise UnauthorizedError("The user token is malformed") from None
    if not isinstance(issuer, str) or not issuer.startswith(("http://", "https://")):
        raise UnauthorizedError("The user token names no http(s) issuer")
    return issuer.rstrip("/") + "/.well-known/openid-configuration"
