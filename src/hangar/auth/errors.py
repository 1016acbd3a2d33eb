"""Authentication failures, coded as AWS sends them (all under ``hangar.domain.errors``).

    AccessDeniedError (403 AccessDeniedException)
    ├── MissingAuthenticationTokenError   403 MissingAuthenticationTokenException  no credentials at all
    ├── InvalidSignatureError             403 InvalidSignatureException            bad, stale or future signature
    └── UnrecognizedClientError           403 UnrecognizedClientException          unknown access key or token
    IncompleteSignatureError              400 IncompleteSignatureException         malformed SigV4 fields
    UnauthorizedError (401 UnauthorizedException)                                  bearer token missing or invalid

Messages name what is wrong (a field, a date) and never echo a secret or a signature.
"""

from __future__ import annotations

from hangar.domain.errors import AccessDeniedError, HangarError


class MissingAuthenticationTokenError(AccessDeniedError):
    code = "MissingAuthenticationTokenException"


class InvalidSignatureError(AccessDeniedError):
    code = "InvalidSignatureException"


class UnrecognizedClientError(AccessDeniedError):
    code = "UnrecognizedClientException"


class IncompleteSignatureError(HangarError):
    code = "IncompleteSignatureException"
    status = 400
