"""InvokeAgentRuntimeCommand: run a shell command in the session's sandbox, its output as an AWS event stream.

Frames (see ``gateway/eventstream.py``): ``contentStart``, ``contentDelta`` with ``stdout``/``stderr`` text as it
comes, then ``contentStop`` with the exit code and ``COMPLETED`` or ``TIMED_OUT``. A failure after the stream has
started becomes an in-stream ``runtimeClientError`` exception frame (boto3 raises EventStreamError).
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from hangar.domain.errors import HangarError, ValidationError
from hangar.gateway import eventstream
from hangar.gateway.dataplane.body import read_json_body
from hangar.gateway.dataplane.common import authorized_target, echo_headers, services_of, session_id_of
from hangar.gateway.proxy import StreamedResponse
from hangar.sandbox.base import ExecEvent

log = logging.getLogger("hangar.gateway")

DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 28800
MAX_COMMAND = 65536


def _parse(body: dict[str, object]) -> tuple[str, int]:
    command = body.get("command")
    if not isinstance(command, str) or not 1 <= len(command) <= MAX_COMMAND:
        raise ValidationError(f"command is required: a string of 1 to {MAX_COMMAND} characters")
    if "\x00" in command or not _encodable(command):  # no argv carries NUL; a lone surrogate has no UTF-8 form
        raise ValidationError("command must be UTF-8 text without NUL characters")
    timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= MAX_TIMEOUT_S:
        raise ValidationError(f"timeout must be an integer number of seconds from 1 to {MAX_TIMEOUT_S}")
    return command, timeout


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def invoke_command(request: Request, params: dict[str, str]) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request)
    raw, body = await read_json_body(request)
    target = await authorized_target(services, request, params, hashlib.sha256(raw).hexdigest())
    command, timeout = _parse(body)
    async with manager.call(target, session_id) as lease:
        events = lease.exec(command, float(timeout))
        try:
            first = await anext(events)  # a sandbox that refuses the command gives a plain HTTP error
        except BaseException:
            await events.aclose()
            raise
        headers = [
            ("content-type", eventstream.CONTENT_TYPE),
            *echo_headers(request.headers, request.headers, session_id),
        ]
        # Active until the command's stream ends (or its client leaves): the response releases the lease.
        return StreamedResponse(_frames(first, events), 200, headers, close=events.aclose, on_end=lease.hand_off())


async def _frames(first: ExecEvent, events: AsyncIterator[ExecEvent]) -> AsyncIterator[bytes]:
    decoders = {kind: codecs.getincrementaldecoder("utf-8")("replace") for kind in ("stdout", "stderr")}
    yield eventstream.event({"contentStart": {}})
    try:
        event: ExecEvent | None = first
        while event is not None:
            if event.kind == "exit":
                for kind, decoder in decoders.items():
                    if tail := decoder.decode(b"", final=True):
                        yield eventstream.event({"contentDelta": {kind: tail}})
                status = "TIMED_OUT" if event.timed_out else "COMPLETED"
                yield eventstream.event({"contentStop": {"exitCode": event.exit_code, "status": status}})
                return
            if text := decoders[event.kind].decode(event.data):
                yield eventstream.event({"contentDelta": {event.kind: text}})
            event = await anext(events, None)
        yield eventstream.exception("runtimeClientError", "The command's output ended without an exit status")
    except HangarError as exc:
        yield eventstream.exception(_member(exc.code), exc.message)
    except Exception as exc:
        log.exception("command stream failed")
        yield eventstream.exception("internalServerException", f"The command failed: {type(exc).__name__}")


def _member(code: str) -> str:
    """``RuntimeClientError`` → ``runtimeClientError``: the event-stream member names are lower camel case."""
    return code[:1].lower() + code[1:]
