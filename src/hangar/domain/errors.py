"""The one exception tree of Hangar.

    HangarError                      500 InternalServerException
    ├── ValidationError              400 ValidationException (reason, fieldList)
    ├── DecryptionFailureError       400 DecryptionFailure (a vault ciphertext failed to open)
    ├── EncryptionFailureError       400 EncryptionFailure (the vault could not seal)
    ├── UnauthorizedError            401 UnauthorizedException
    ├── ServiceQuotaExceededError    402 ServiceQuotaExceededException
    ├── AccessDeniedError            403 AccessDeniedException
    ├── NotFoundError                404 ResourceNotFoundException
    ├── ConflictError                409 ConflictException
    ├── RetryableConflictError       409 RetryableConflictException
    ├── RuntimeClientError           424 RuntimeClientError (the agent failed)
    ├── ThrottledError               429 ThrottlingException
    └── ServiceUnavailableError      503 ServiceUnavailableException

Each class carries the AWS error code and HTTP status; ``gateway/errors.py`` is the only place that renders
them. Raise these from any layer; never raise a bare ``Exception`` across a package boundary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One entry of a ValidationException ``fieldList``."""

    name: str
    message: str


class HangarError(Exception):
    code = "InternalServerException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        """The JSON body AWS sends for this error (``message`` plus modeled extras)."""
        return {"message": self.message}


class ValidationError(HangarError):
    code = "ValidationException"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        reason: str = "FieldValidationFailed",
        fields: list[FieldProblem] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.fields = fields or []

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message, "reason": self.reason}
        if self.fields:
            body["fieldList"] = [{"name": f.name, "message": f.message} for f in self.fields]
        return body


class DecryptionFailureError(HangarError):
    code = "DecryptionFailure"
    status = 400


class EncryptionFailureError(HangarError):
    code = "EncryptionFailure"
    status = 400


class UnauthorizedError(HangarError):
    code = "UnauthorizedException"
    status = 401


class ServiceQuotaExceededError(HangarError):
    code = "ServiceQuotaExceededException"
    status = 402


class AccessDeniedError(HangarError):
    code = "AccessDeniedException"
    status = 403


class NotFoundError(HangarError):
    code = "ResourceNotFoundException"
    status = 404


class ConflictError(HangarError):
    code = "ConflictException"
    status = 409


class RetryableConflictError(HangarError):
    code = "RetryableConflictException"
    status = 409


class RuntimeClientError(HangarError):
    code = "RuntimeClientError"
    status = 424


class ThrottledError(HangarError):
    code = "ThrottlingException"
    status = 429


class ServiceUnavailableError(HangarError):
    code = "ServiceUnavailableException"
    status = 503


class InternalError(HangarError):
    code = "InternalServerException"
    status = 500
