"""Authentication glue between HTTP requests and ``hangar.auth`` (owned by the inbound-auth work)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from hangar.domain.errors import AccessDeniedError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.types import Principal
from hangar.services import Services


async def authenticate_sigv4(conn: HTTPConnection, services: Services, payload_sha256: str) -> Principal:
    """Verify the request's SigV4 signature (header or presigned query form); fail closed."""
    raise AccessDeniedError("SigV4 verification is not implemented yet")


async def authenticate_invocation(
    conn: HTTPConnection, services: Services, target: InvocationTarget, payload_sha256: str
) -> Principal:
    """Data plane: Bearer JWT when the runtime has a customJWTAuthorizer, SigV4 otherwise (never both)."""
    raise AccessDeniedError("Data-plane authentication is not implemented yet")
