"""Authentication glue between HTTP requests and ``hangar.auth`` (owned by the inbound-auth work)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from hangar.domain.errors import AccessDeniedError
from hangar.domain.types import Principal
from hangar.services import Services


async def authenticate_sigv4(request: HTTPConnection, services: Services, payload_sha256: str) -> Principal:
    """Verify the request's SigV4 signature; fail closed when no verifier is configured."""
    if services.sigv4 is None:
        raise AccessDeniedError("Request signing is not configured on this server")
    raise AccessDeniedError("SigV4 verification is not implemented yet")
