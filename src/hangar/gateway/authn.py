"""Authentication glue between HTTP requests and ``hangar.auth``: build what the verifiers need, return a Principal.

Nothing here is stored globally: each call reads the connection it is given and returns the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection

from hangar.auth.errors import MissingAuthenticationTokenError
from hangar.auth.sigv4 import SignedRequest
from hangar.domain.errors import AccessDeniedError, HangarError, NotFoundError, UnauthorizedError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.types import Principal
from hangar.services import Services

log = logging.getLogger("hangar.auth")


def signed_request(conn: HTTPConnection) -> SignedRequest:
    """The request exactly as received: raw path, raw query, every header (UTF-8, as botocore signs them)."""
    scope = conn.scope
    raw = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw.decode("utf-8", "replace").split("?", 1)[0]
    method = scope.get("method", "GET")  # a WebSocket upgrade is a GET
    return SignedRequest(
        method=method,
        raw_path=raw_path,
        query_string=scope.get("query_string", b"").decode("utf-8", "replace"),
        headers=[(k.decode("latin-1"), v.decode("utf-8", "replace")) for k, v in scope["headers"]],
    )


async def authenticate_sigv4(conn: HTTPConnection, services: Services, payload_sha256: str) -> Principal:
    """Verify the request's SigV4 signature (header or presigned query form); fail closed."""
    request = signed_request(conn)
    try:
        return await _sigv4(request, services, payload_sha256)
    except HangarError as exc:
        _log_refusal(request, exc)
        raise


async def authenticate_then_resolve(
    conn: HTTPConnection,
    services: Services,
    resolve: Callable[[], InvocationTarget],
    payload_sha256: str,
) -> tuple[InvocationTarget, Principal]:
    """Data plane, in the order that tells an unauthenticated caller nothing about which runtimes exist.

    A SigV4 signature does not depend on the runtime, so it is verified before the runtime is looked up; a
    request with no credentials at all gets the same refusal whether the runtime exists or not. Only a bearer
    token needs the runtime (its authorizer says which issuer and audience to trust) before it can be checked.

    A runtime with a customJWTAuthorizer takes Bearer only, one without takes SigV4 only: the other method is
    refused outright (403), as AgentCore does, even when its credentials would be valid. WebSocket upgrades follow
    the same rules (SigV4 headers or a presigned URL, or ``Authorization: Bearer``).
    """
    request = signed_request(conn)
    if services.sigv4.carries_signature(request):
        principal = await _refusals_logged(request, _sigv4(request, services, payload_sha256))
        target = resolve()
        if target.jwt_authorizer is not None:
            error = AccessDeniedError(_MISMATCH + " This runtime accepts OAuth bearer tokens only.")
            _log_refusal(request, error)
            raise error
        return target, principal
    if _bearer(request.header_values("authorization")) is None:
        # No credentials: a JWT runtime answers 401 (it wants a token); anything else, a missing runtime
        # included, gets the same 403, so the answer does not say whether the runtime exists.
        found: InvocationTarget | None
        try:
            found = resolve()
        except NotFoundError:
            found = None
        if found is None or found.jwt_authorizer is None:
            error = MissingAuthenticationTokenError(
                "Missing authentication: sign the request with SigV4 or send 'Authorization: Bearer <JWT>'"
            )
            _log_refusal(request, error)
            raise error
        target = found
    else:
        target = resolve()
    return target, await _refusals_logged(request, _invocation(request, services, target, payload_sha256))


async def _refusals_logged(request: SignedRequest, check: Awaitable[Principal]) -> Principal:
    try:
        return await check
    except HangarError as exc:
        _log_refusal(request, exc)
        raise


async def _sigv4(request: SignedRequest, services: Services, payload_sha256: str) -> Principal:
    caller = await services.sigv4.verify(request, payload_sha256)
    return Principal(
        kind="sigv4",
        account_id=caller.key.account_id,
        name=caller.key.principal_name,
        access_key_id=caller.key.access_key_id,
    )


async def _invocation(
    request: SignedRequest, services: Services, target: InvocationTarget, payload_sha256: str
) -> Principal:
    bearer = _bearer(request.header_values("authorization"))
    if target.jwt_authorizer is None:
        if bearer is not None:
            raise AccessDeniedError(_MISMATCH + " This runtime accepts SigV4-signed requests only.")
        return await _sigv4(request, services, payload_sha256)
    if services.sigv4.carries_signature(request):
        raise AccessDeniedError(_MISMATCH + " This runtime accepts OAuth bearer tokens only.")
    if bearer is None:
        raise UnauthorizedError("Missing bearer token: send 'Authorization: Bearer <JWT>'")
    verified = await services.jwt.authorize(bearer, target.jwt_authorizer)
    return Principal(
        kind="jwt",
        account_id=target.account_id,
        name=verified.client_id or verified.subject or "jwt",
        subject=verified.subject,
        claims=verified.claims,
    )


_MISMATCH = "Authorization method mismatch: the runtime is configured for a different authorization method."


def _log_refusal(request: SignedRequest, error: HangarError) -> None:
    """One line per refused caller for the operator; messages carry no secrets, tokens or signatures."""
    log.info("refused %s %s: %s %s", request.method, request.raw_path[:200], error.code, error.message)


def _bearer(authorization: list[str]) -> str | None:
    """The token of a single ``Authorization: Bearer <token>`` header, else None."""
    if len(authorization) != 1:
        return None
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
