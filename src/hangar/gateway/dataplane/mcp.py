"""MCP streamable HTTP through InvokeAgentRuntime: which Hangar session serves an ``Mcp-Session-Id``, and the
client's closing ``DELETE``.

An MCP client sends no runtime session header: it repeats the ``Mcp-Session-Id`` of the first answer (a stateful
server's own id, else the Hangar session id Hangar returns). Hangar remembers, per runtime, which Hangar session and
which caller each such id belongs to, so every request of one MCP session reaches the same sandbox. An id used
under another runtime, by another caller, or after its Hangar session ended is unknown: 404 ResourceNotFound, as the
MCP spec answers an expired session, so the client initializes afresh.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from hangar.domain.errors import NotFoundError, RuntimeClientError, ValidationError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.types import Principal
from hangar.gateway.dataplane.common import (
    EMPTY_SHA256,
    SESSION_HEADER,
    agent_headers,
    authorized_target,
    services_of,
    session_id_of,
)
from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar.gateway")

MCP_SESSION = "mcp-session-id"
MAX_MCP_SESSION = 1024  # the API's Mcp-Session-Id length limit


@dataclass(frozen=True)
class _Binding:
    session_id: str
    owner: tuple[str, ...]


class McpSessions:
    """``(runtime id, Mcp-Session-Id) → (Hangar session, owner)``; entries of ended sessions are swept lazily."""

    SWEEP_EVERY = 1024

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager
        self._bound: dict[tuple[str, str], _Binding] = {}
        self._added = 0

    def __len__(self) -> int:
        return len(self._bound)

    def remember(self, runtime_id: str, mcp_id: str, session_id: str, owner: tuple[str, ...]) -> None:
        key = (runtime_id, mcp_id)
        if key not in self._bound:
            self._added += 1
            if self._added % self.SWEEP_EVERY == 0:
                self.sweep()
        self._bound[key] = _Binding(session_id, owner)

    def session_for(self, runtime_id: str, mcp_id: str, owner: tuple[str, ...]) -> str:
        """The Hangar session of a live MCP session this caller opened on this runtime, else NotFound."""
        binding = self._bound.get((runtime_id, mcp_id))
        if binding is not None and self._manager.get(runtime_id, binding.session_id) is None:
            del self._bound[(runtime_id, mcp_id)]  # its sandbox is gone: so is the MCP session
            binding = None
        if binding is None or binding.owner != owner:
            raise NotFoundError(
                f"MCP session {mcp_id[:64]} was not found on this runtime or has ended; initialize a new one"
            )
        return binding.session_id

    def forget(self, runtime_id: str, mcp_id: str) -> None:
        self._bound.pop((runtime_id, mcp_id), None)

    def serves(self, runtime_id: str, session_id: str) -> bool:
        """Whether any MCP session still uses this Hangar session."""
        return any(k[0] == runtime_id and b.session_id == session_id for k, b in self._bound.items())

    def sweep(self) -> None:
        self._bound = {k: b for k, b in self._bound.items() if self._manager.get(k[0], b.session_id) is not None}


_REGISTRIES: weakref.WeakKeyDictionary[SessionManager, McpSessions] = weakref.WeakKeyDictionary()


def registry(manager: SessionManager) -> McpSessions:
    found = _REGISTRIES.get(manager)
    if found is None:
        found = _REGISTRIES[manager] = McpSessions(manager)
    return found


def owner_of(conn: HTTPConnection) -> tuple[str, ...]:
    """Who called: an MCP session is only ever usable by the caller that opened it."""
    principal: Principal | None = getattr(conn.state, "principal", None)
    if principal is None:
        return ("anonymous",)
    return (principal.kind, principal.account_id, principal.name, str(getattr(principal, "subject", None) or ""))


def sticky_session(conn: HTTPConnection, manager: SessionManager, target: InvocationTarget, session_id: str) -> str:
    """The runtime session of an MCP request: the runtime session header when sent, else the one its
    ``Mcp-Session-Id`` was given, else ``session_id`` (a fresh one)."""
    if SESSION_HEADER in conn.headers:
        return session_id
    mcp_id = conn.headers.get(MCP_SESSION)
    if mcp_id is None:
        return session_id
    if not 1 <= len(mcp_id) <= MAX_MCP_SESSION:
        raise ValidationError(f"Mcp-Session-Id must be 1 to {MAX_MCP_SESSION} characters long")
    return registry(manager).session_for(target.runtime_id, mcp_id, owner_of(conn))


def opened_here(conn: HTTPConnection) -> bool:
    """The request names neither a runtime session nor an MCP session: Hangar made a session up for it."""
    return SESSION_HEADER not in conn.headers and MCP_SESSION not in conn.headers


def is_initialize(body: bytes | object) -> bool:
    """A JSON-RPC ``initialize`` (alone or in a batch): the server must not see a made-up ``Mcp-Session-Id`` then,
    as a stateful server answers 404 to an id it did not issue."""
    if not isinstance(body, bytes) or b'"initialize"' not in body:
        return False
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nested deeper than the parser's stack: not an initialize either
        return False
    messages = parsed if isinstance(parsed, list) else [parsed]
    return any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages)


def remember_answer(
    conn: HTTPConnection, manager: SessionManager, target: InvocationTarget, session_id: str, mcp_id: str
) -> None:
    registry(manager).remember(target.runtime_id, mcp_id, session_id, owner_of(conn))


async def end_mcp_session(request: Request, params: dict[str, str]) -> Response:
    """``DELETE …/invocations`` with ``Mcp-Session-Id``: the MCP client's goodbye.

    Passed to the server (a stateful one ends its session; a stateless one may answer 405, which is fine), then the
    id is forgotten and, when no other MCP session uses it, the Hangar session is stopped: nothing is left behind.
    """
    services, manager = services_of(request)
    explicit = session_id_of(request) if SESSION_HEADER in request.headers else None
    target = await authorized_target(services, request, params, EMPTY_SHA256)
    if target.protocol != "MCP":
        raise ValidationError(
            f"DELETE is only supported for MCP runtimes; {target.runtime_id} serves {target.protocol}"
        )
    mcp_id = request.headers.get(MCP_SESSION)
    if not mcp_id:
        raise ValidationError("DELETE needs the Mcp-Session-Id header of the MCP session to end")
    sessions = registry(manager)
    session_id = explicit or sticky_session(request, manager, target, "")
    session = manager.get(target.runtime_id, session_id)
    if session is not None and session.alive():
        headers = agent_headers(request.headers, session.target, session_id, request.state.request_id)
        async with manager.use(session) as lease:
            try:
                answer = await lease.request("DELETE", session.target.path, headers)
                await answer.aclose()
            except RuntimeClientError as exc:
                log.info("the MCP server did not answer DELETE for %s: %s", session_id, exc.message)
    sessions.forget(target.runtime_id, mcp_id)
    if session is not None and not sessions.serves(target.runtime_id, session_id):
        await manager.stop_session(target.runtime_id, session_id, reason="MCP session ended by the client")
    return Response(status_code=204, headers={SESSION_HEADER: session_id})
