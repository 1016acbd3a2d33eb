"""Agent logs as one JSON object per line, stamped with the request and session they belong to.

The runtime collects an agent's stdout/stderr; JSON lines with ``requestId`` and ``sessionId`` let an operator
find every line of one invocation without the agent passing ids around.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import datetime, timezone

from ._context import BedrockAgentCoreContext

__all__ = ["LOGGER_NAME", "RequestContextFormatter", "app_logger"]

LOGGER_NAME = "hangar.sdk.app"


class RequestContextFormatter(logging.Formatter):
    """Formats a record as JSON: timestamp, level, message, logger, ids, and the error when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)  # noqa: UP017 - agents may run Python 3.10
        entry: dict[str, object] = {
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        if request_id := BedrockAgentCoreContext.get_request_id():
            entry["requestId"] = request_id
        if session_id := BedrockAgentCoreContext.get_session_id():
            entry["sessionId"] = session_id
        if record.exc_info and record.exc_info[0] is not None:
            entry["errorType"] = record.exc_info[0].__name__
            entry["errorMessage"] = str(record.exc_info[1])
            entry["stackTrace"] = traceback.format_exception(*record.exc_info)
            entry["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        return json.dumps(entry, ensure_ascii=False)


def app_logger(debug: bool) -> logging.Logger:
    """The app's logger, given a JSON handler on first use (an application that configured it keeps its own)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(RequestContextFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    return logger
