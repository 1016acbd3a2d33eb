"""StopRuntimeSession: end the session's sandbox now; a later invoke with the same id starts a fresh one.

The body's ``clientToken`` makes the call idempotent, as on AWS: a retry with the same token (say after a lost
answer) gets the first call's answer even though the session is gone by then, and concurrent calls with one token
share one stop. A token reused for another session is a ConflictException.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.domain.errors import ConflictError, NotFoundError
from hangar.domain.names import CLIENT_TOKEN
from hangar.domain.validation import Checker
from hangar.gateway.dataplane.body import read_json_body
from hangar.gateway.dataplane.common import SESSION_HEADER, authorized_target, services_of, session_id_of

TOKENS_KEPT = 10_000
TOKEN_TTL_S = 3600.0


class StopTokens:
    """The recent client tokens of StopRuntimeSession: token -> ((runtime, session), the stop's outcome)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[tuple[str, str], float, asyncio.Future[bool]]] = OrderedDict()

    def claim(self, token: str, key: tuple[str, str]) -> asyncio.Future[bool] | None:
        """The earlier call's outcome for this token, or None when this call is the first (it must ``settle``)."""
        now = time.monotonic()
        while self._seen and (len(self._seen) > TOKENS_KEPT or next(iter(self._seen.values()))[1] < now - TOKEN_TTL_S):
            self._seen.popitem(last=False)  # oldest first: tokens are kept in the order they were first seen
        found = self._seen.get(token)
        if found is not None:
            if found[0] != key:
                raise ConflictError("This clientToken was already used to stop a different session")
            return found[2]
        self._seen[token] = (key, now, asyncio.get_running_loop().create_future())
        return None

    def settle(self, token: str, stopped: bool) -> None:
        """Record the first call's outcome; a failed stop (an error, or no such session) is forgotten."""
        entry = self._seen.get(token)
        if entry is None or entry[2].done():
            return
        if stopped:
            entry[2].set_result(True)
            return
        del self._seen[token]
        entry[2].set_result(False)


def _tokens(request: Request) -> StopTokens:
    tokens = getattr(request.app.state, "stop_tokens", None)
    if tokens is None:
        tokens = request.app.state.stop_tokens = StopTokens()
    return tokens


async def stop_session(request: Request, params: dict[str, str]) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request, required=True)
    raw, body = await read_json_body(request)
    target = await authorized_target(services, request, params, hashlib.sha256(raw).hexdigest())
    check = Checker()
    token = check.string(body.get("clientToken"), "clientToken", min_len=33, max_len=256, pattern=CLIENT_TOKEN)
    check.raise_if_any()
    tokens = _tokens(request)
    earlier = tokens.claim(token, (target.runtime_id, session_id)) if token is not None else None
    if earlier is not None:
        stopped = await asyncio.shield(earlier)
    else:
        try:
            stopped = await manager.stop_session(target.runtime_id, session_id, reason="stopped by StopRuntimeSession")
        except BaseException:
            if token is not None:
                tokens.settle(token, False)
            raise
        if token is not None:
            tokens.settle(token, stopped)
    if not stopped:
        raise NotFoundError(f"Session {session_id} was not found or has already been terminated")
    return JSONResponse({}, headers={SESSION_HEADER: session_id})
