"""Operator API beyond AWS: see and stop sessions (``hangar sessions``), SigV4-signed like every other call.

GET    /hangar/sessions/                          -> 200 {"sessions": [...], "warmPool": {...}}: live ones (with
                                                     memory use and startKind), then recently Terminated ones
                                                     (also from before a restart); the warm pool's spares
DELETE /hangar/sessions/{runtimeId}/{sessionId}/  -> 200 {"stopped": true}; 404 when no such live session
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.domain.errors import InternalError, NotFoundError
from hangar.domain.names import LOCAL_NODE
from hangar.gateway import nodes
from hangar.gateway.routing import Route
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import Session

log = logging.getLogger("hangar.gateway")

STATS_TIMEOUT_S = 2.0


def _manager(request: Request) -> SessionManager:
    manager: SessionManager | None = request.app.state.services.sessions
    if manager is None:
        raise InternalError("The session manager is not configured")
    return manager


async def _memory(session: Session) -> int | None:
    try:
        return (await asyncio.wait_for(session.stats(), STATS_TIMEOUT_S)).memory_bytes
    except Exception as exc:  # a sandbox ending right now has no stats; the listing must still work
        log.debug("no stats for sandbox %s: %s", session.sandbox_id, exc)
        return None


async def list_sessions(request: Request, _params: dict[str, str]) -> Response:
    if (cluster := await nodes.cluster_sessions(request)) is not None:  # sessions on cluster nodes (gateway/nodes.py)
        return cluster
    manager = _manager(request)
    live = manager.live_sessions()
    memory = await asyncio.gather(*(_memory(s) for s in live))
    by_sandbox = {s.sandbox_id: m for s, m in zip(live, memory, strict=True)}
    sessions = manager.list_sessions()
    for entry in sessions:
        entry["node"] = LOCAL_NODE
        if entry["state"] != "Terminated":
            entry["memoryBytes"] = by_sandbox.get(str(entry["sandboxId"]))
    return JSONResponse(
        {
            "sessions": sessions,
            "backend": manager.describe_backend(),
            "warmPool": manager.pool.describe(),
            "templates": manager.templates.describe(),
        }
    )


async def stop_session(request: Request, params: dict[str, str]) -> Response:
    manager = _manager(request)
    runtime_id, session_id = params["runtimeId"], params["sessionId"]
    if not await manager.stop_session(runtime_id, session_id, reason="stopped by an operator"):
        raise NotFoundError(f"No live session {session_id} of runtime {runtime_id}")
    return JSONResponse({"stopped": True, "runtimeId": runtime_id, "runtimeSessionId": session_id})


ROUTES = [
    Route("GET", "/hangar/sessions/", list_sessions, name="ListSessions"),
    Route("DELETE", "/hangar/sessions/{runtimeId}/{sessionId}/", stop_session, name="StopSession"),
]
