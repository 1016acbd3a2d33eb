"""Authentication glue between HTTP requests and ``hangar.auth``: build what the verifiers need, return a Principal.

Nothing here is stored globally: each call reads the connection it is given and returns the caller.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from hangar.auth.sigv4 import SignedRequest
from hangar.domain.errors import InternalError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.types import Principal
from hangar.services import Services


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
    if services.sigv4 is None:
        raise InternalError("SigV4 verification is not configured")
    caller = await services.sigv4.verify(signed_request(conn), payload_sha256)
    return Principal(
        kind="sigv4",
        account_id=caller.key.account_id,
        name=caller.key.principal_name,
        access_key_id=caller.key.access_key_id,
    )


async def authenticate_invocation(
    conn: HTTPConnection, services: Services, target: InvocationTarget, payload_sha256: str
) -> Principal:
    """Data plane: Bearer JWT when the runtime has a customJWTAuthorizer, SigV4 otherwise (never both)."""
    from hangar.domain.errors import AccessDeniedError

    raise AccessDeniedError("Data-plane authentication is not implemented yet")
