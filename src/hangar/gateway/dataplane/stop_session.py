"""StopRuntimeSession: end the session's sandbox now; a later invoke with the same id starts a fresh one."""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.domain.errors import NotFoundError
from hangar.gateway.dataplane.body import read_json_body
from hangar.gateway.dataplane.common import SESSION_HEADER, authorized_target, services_of, session_id_of


async def stop_session(request: Request, params: dict[str, str]) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request, required=True)
    raw, _ = await read_json_body(request)  # {"clientToken": ...}: stopping twice is harmless, nothing to dedupe
    target = await authorized_target(services, request, params, hashlib.sha256(raw).hexdigest())
    if not await manager.stop_session(target.runtime_id, session_id, reason="stopped by StopRuntimeSession"):
        raise NotFoundError(f"Session {session_id} was not found or has already been terminated")
    return JSONResponse({}, headers={SESSION_HEADER: session_id})
