"""The only place that turns Hangar errors into AWS-shaped HTTP responses."""

from __future__ import annotations

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
    log.exception("unhandled error while serving a request", exc_info=exc)
    return error_response(InternalError("The server hit an unexpected error; see its log."), request_id)
