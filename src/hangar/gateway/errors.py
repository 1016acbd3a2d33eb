"""The only place that turns Hangar errors into AWS-shaped HTTP responses."""

from __future__ import annotations

import errno
import json
import logging
import uuid

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from hangar.domain.errors import HangarError, InternalError, ValidationError

log = logging.getLogger("hangar.gateway")


def error_response(error: HangarError, request_id: str | None = None) -> Response:
    """Render ``error`` as botocore's rest-json parser expects: ``x-amzn-ErrorType`` + ``{"message"}``."""
    request_id = request_id or str(uuid.uuid4())
    return Response(
        _json_bytes(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id},
    )


def _json_bytes(document: dict[str, object]) -> bytes:
    """UTF-8 JSON. A lone surrogate echoed back from hostile input has no UTF-8 form: it goes out as a JSON escape."""
    text = json.dumps(document, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(document).encode()


def unexpected_error_response(exc: BaseException, request_id: str | None = None) -> Response:
    """A bug reached the edge: log it with its traceback, answer a 500 that leaks nothing.

    A client that hangs up mid-body is no bug: it gets a 400 it will never read, and one log line."""
    if isinstance(exc, ClientDisconnect):
        log.info("the client went away before sending its whole request")
        return error_response(ValidationError("The client went away before sending the whole request."), request_id)
    if disk_full(exc):
        log.error("out of disk space while serving a request: %s", exc)
        return error_response(InternalError(DISK_FULL), request_id)
    log.exception("unhandled error while serving a request", exc_info=exc)
    return error_response(InternalError("The server hit an unexpected error; see its log."), request_id)


DISK_FULL = "The server's data directory is out of disk space (No space left on device); free space and retry."


def disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT anywhere in the chain (SQLAlchemy wraps SQLite's "database or disk is full"): an operator's
    problem, not a bug, so the client is told what it is instead of "unexpected error"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(current):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
    return False
