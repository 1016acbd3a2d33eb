"""The node's HTTP API: what a gateway calls to run sessions on this node (docs/cluster.md, "Node API").

Every request (WebSocket upgrades included) carries ``X-Hangar-Node-Auth`` (node_auth.py) or is refused 401
before anything runs. Sessions are used only through call leases, like the gateway's own handlers. Bodies stream
both ways: the request body goes to the agent as it arrives, the agent's answer comes back piece by piece.

An error of the node itself (not the agent's own answer) carries ``X-Hangar-Node-Error: <code>`` and a JSON body
``{"code", "message"}`` with the status of Hangar's error class; a draining node refuses a session it does not
already have with 409 ``NodeDraining``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from hangar.cluster import node_auth, node_logs, node_return, node_shells
from hangar.cluster.node_versions import NodeVersions, parse_target
from hangar.domain.errors import (
    ConflictError,
    HangarError,
    InternalError,
    RuntimeClientError,
    ServiceUnavailableError,
    ValidationError,
)
from hangar.sandbox.base import ExecEvent
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import SessionKey

log = logging.getLogger("hangar.cluster")

ERROR_HEADER = "X-Hangar-Node-Error"
DRAINING = "NodeDraining"
NOT_HERE = "NotFound"
HEADER_PREFIX = "x-hangar-h-"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
MAX_MESSAGE = 16 * 1024 * 1024


class NodeDrainingError(ConflictError):
    code = DRAINING


class SessionNotHereError(HangarError):
    """A gateway that called with ``X-Hangar-Existing`` (a binding from its memory) wants this node's live session
    or nothing: another gateway may have stopped it and bound the id elsewhere since."""

    code = NOT_HERE
    status = 404


@dataclass
class NodeState:
    """What the API serves from: this node's sessions and versions, its key, and whether it drains."""

    name: str
    manager: SessionManager
    versions: NodeVersions
    key: bytes
    draining: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def error_response(exc: HangarError) -> JSONResponse:
    return JSONResponse(
        {"code": exc.code, "message": exc.message}, status_code=exc.status, headers={ERROR_HEADER: exc.code}
    )


class NodeAuth:
    """Refuses (401) any HTTP request or WebSocket upgrade without a valid, fresh signature."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], key: bytes) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        value = None
        for name, raw in scope.get("headers", []):
            if name == b"x-hangar-node-auth":
                value = raw.decode("latin-1")
        path = scope.get("raw_path") or scope["path"].encode()
        method = scope.get("method", "GET")
        reason = node_auth.verify(self.key, value, method, path.decode("latin-1").partition("?")[0])
        if reason is None:
            await self.app(scope, receive, send)
            return
        log.warning("node API: refused %s %s: %s", method, scope["path"], reason)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "unauthorized"})
            return
        refusal = JSONResponse(
            {"code": "UnauthorizedException", "message": "missing, wrong or stale X-Hangar-Node-Auth"},
            status_code=401,
            headers={ERROR_HEADER: "UnauthorizedException"},
        )
        await refusal(scope, receive, send)


class Relay(Response):
    """The agent's answer, streamed as it arrives; ``on_end(completed)`` runs exactly once, whatever happens."""

    def __init__(
        self,
        pieces: AsyncIterator[bytes],
        status: int,
        headers: list[tuple[str, str]],
        close: Callable[[], Awaitable[None]],
        on_end: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.status_code = status
        self.background = None
        self._pieces = pieces
        self._close = close
        self._on_end = on_end
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for piece in self._pieces:
                    if piece:
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
            except Exception as exc:  # the agent broke off: the caller sees a cut stream
                log.warning("node API: the agent's answer broke off: %s", exc)
                raise
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            completed = True
        except OSError:
            completed = True  # the gateway left: not the agent's fault
        finally:
            with contextlib.suppress(Exception):
                await self._close()
            await self._on_end(completed)


def _ref_of(request: Request | WebSocket) -> tuple[str, str]:
    return request.path_params["rt"], request.path_params["sid"]


def _check_existing(request: Request, state: NodeState, runtime_id: str, session_id: str) -> None:
    if "x-hangar-existing" not in request.headers or state.manager.get(runtime_id, session_id) is not None:
        return
    if SessionKey(runtime_id, session_id) in state.manager._starting:  # a start under way counts
        return
    raise SessionNotHereError(f"no live session {session_id} of {runtime_id} on node {state.name}")


def _check_draining(state: NodeState, runtime_id: str, session_id: str) -> None:
    if (fence := node_return.fenced(state)) is not None:  # even a live session: its id may live elsewhere now
        raise ServiceUnavailableError(f"{fence}: it takes no session calls until it is back")
    if state.draining and state.manager.get(runtime_id, session_id) is None:
        raise NodeDrainingError(f"node {state.name} is draining: it takes no new sessions")


async def _chunked(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """HTTP/1.1 chunked framing, for a body whose length the gateway did not say."""
    async for piece in body:
        if piece:
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


async def _nonempty(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for piece in body:
        if piece:
            yield piece


async def agent_request(request: Request) -> Response:
    state: NodeState = request.app.state.node
    try:
        runtime_id, session_id = _ref_of(request)
        ref = parse_target(request.headers.get("x-hangar-target"))
        if ref[0] != runtime_id:
            raise ValidationError("X-Hangar-Target names another runtime than the path")
        method = request.headers.get("x-hangar-agent-method", "POST").upper()
        path = request.headers.get("x-hangar-agent-path")
        if not path or not path.startswith("/"):
            raise ValidationError("X-Hangar-Agent-Path must be an absolute path")
        headers = [
            (name[len(HEADER_PREFIX) :], value)
            for name, value in request.headers.items()
            if name.startswith(HEADER_PREFIX) and name[len(HEADER_PREFIX) :] not in _HOP_BY_HOP
        ]
        body: bytes | AsyncIterator[bytes] = _nonempty(request.stream())
        if not any(name == "content-length" for name, _ in headers):
            if "content-length" in request.headers:
                headers.append(("content-length", request.headers["content-length"]))
            elif method in ("GET", "HEAD"):
                body = b""
            else:
                headers.append(("transfer-encoding", "chunked"))
                body = _chunked(request.stream())
        _check_existing(request, state, runtime_id, session_id)
        _check_draining(state, runtime_id, session_id)
        target = await state.versions.target(ref)
        async with state.manager.call(target, session_id) as lease:
            upstream = await lease.request(method, path, headers, body)
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP]
            return Relay(upstream.iter_raw(), upstream.status_code, out, upstream.aclose, lease.hand_off())
    except HangarError as exc:
        return error_response(exc)


async def agent_exec(request: Request) -> Response:
    """``{"command", "timeout"}`` → NDJSON: ``{"kind": "stdout"|"stderr", "data": <base64>}`` lines, then
    ``{"kind": "exit", "exitCode", "timedOut"}``. Starts the session from ``X-Hangar-Target`` if it is not live."""
    state: NodeState = request.app.state.node
    try:
        runtime_id, session_id = _ref_of(request)
        try:
            doc = json.loads(await request.body())
            command, timeout = str(doc["command"]), float(doc.get("timeout", 60))
        except (ValueError, KeyError, TypeError):
            raise ValidationError('the body must be JSON {"command": ..., "timeout": seconds}') from None
        session = state.manager.get(runtime_id, session_id)
        if session is None:  # a command may be a session's first call: started from the target, as /request does
            header = request.headers.get("x-hangar-target")
            if header is None:
                raise ConflictError(f"no live session {session_id} of {runtime_id} on node {state.name}")
            ref = parse_target(header)
            if ref[0] != runtime_id:
                raise ValidationError("X-Hangar-Target names another runtime than the path")
            _check_draining(state, runtime_id, session_id)
            session = await state.manager.get_or_start(await state.versions.target(ref), session_id)
        async with state.manager.use(session) as lease:
            events = lease.exec(command, timeout)
            on_end = lease.hand_off()

            async def lines() -> AsyncIterator[bytes]:
                async for event in events:
                    yield (json.dumps(_event(event)) + "\n").encode()

            return Relay(lines(), 200, [("content-type", "application/x-ndjson")], events.aclose, on_end)
    except HangarError as exc:
        return error_response(exc)


def _event(event: ExecEvent) -> dict[str, Any]:
    if event.kind == "exit":
        return {"kind": "exit", "exitCode": event.exit_code, "timedOut": event.timed_out}
    return {"kind": event.kind, "data": base64.b64encode(event.data).decode()}


async def stop_session(request: Request) -> Response:
    state: NodeState = request.app.state.node
    runtime_id, session_id = _ref_of(request)
    stopped = await state.manager.stop_session(runtime_id, session_id, reason="stopped through the gateway")
    return JSONResponse({"stopped": stopped})


async def list_sessions(request: Request) -> Response:
    state: NodeState = request.app.state.node
    starting = [[key.runtime_id, key.session_id] for key in state.manager._starting]  # not listed yet: still live
    return JSONResponse({"node": state.name, "sessions": state.manager.list_sessions(), "starting": starting})


async def health(request: Request) -> Response:
    state: NodeState = request.app.state.node
    return JSONResponse({"node": state.name, "healthy": True, "draining": state.draining})


async def agent_websocket(websocket: WebSocket) -> None:
    """Relayed both ways to the agent's ``/ws`` (text, binary, close codes). Needs ``X-Hangar-Target``."""
    from websockets.asyncio.client import unix_connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    state: NodeState = websocket.app.state.node
    runtime_id, session_id = _ref_of(websocket)
    try:
        ref = parse_target(websocket.headers.get("x-hangar-target"))
        _check_draining(state, runtime_id, session_id)
        target = await state.versions.target(ref)
    except HangarError as exc:
        await websocket.close(code=1011, reason=exc.message[:120])
        return
    headers = [(k[len(HEADER_PREFIX) :], v) for k, v in websocket.headers.items() if k.startswith(HEADER_PREFIX)]
    path = websocket.headers.get("x-hangar-agent-path", "/ws")
    async with state.manager.call(target, session_id) as lease:
        try:
            agent = await unix_connect(
                lease.socket_path, f"ws://agent{path}", additional_headers=headers, max_size=MAX_MESSAGE
            )
        except (OSError, InvalidHandshake) as exc:
            await lease.broken()
            await websocket.close(code=1011, reason=str(RuntimeClientError(str(exc)).message)[:120])
            return
        await websocket.accept()
        async with agent:

            async def upward() -> None:
                try:
                    while True:
                        message = await websocket.receive()
                        if message["type"] == "websocket.disconnect":
                            await agent.close(code=message.get("code", 1000))
                            return
                        data = message.get("bytes")
                        await agent.send(data if data is not None else message.get("text", ""))
                except (WebSocketDisconnect, ConnectionClosed):
                    return

            async def downward() -> None:
                try:
                    async for message in agent:
                        if isinstance(message, bytes):
                            await websocket.send_bytes(message)
                        else:
                            await websocket.send_text(message)
                except ConnectionClosed:
                    pass
                code = agent.close_code or 1000
                with contextlib.suppress(Exception):
                    await websocket.close(code=code if code not in (1005, 1006, 1015) else 1000)

            tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def unexpected(request: Request, exc: Exception) -> Response:
    """Anything unforeseen is still the node's error, never mistaken for the agent's answer."""
    log.error("node API: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError(f"node error: {type(exc).__name__}"))


def build_app(state: NodeState) -> NodeAuth:
    base = "/node/v1/sessions/{rt}/{sid}"
    app = Starlette(
        exception_handlers={Exception: unexpected},
        routes=[
            Route(base + "/request", agent_request, methods=["POST"]),
            Route(base + "/exec", agent_exec, methods=["POST"]),
            WebSocketRoute(base + "/ws", agent_websocket),
            WebSocketRoute(base + "/shells", node_shells.shell_websocket),  # the session's interactive shells
            Route(base, stop_session, methods=["DELETE"]),
            Route("/node/v1/sessions", list_sessions, methods=["GET"]),
            Route("/node/v1/health", health, methods=["GET"]),
            *node_logs.ROUTES,  # the node's session logs, for the gateways' CloudWatch Logs API
        ],
    )
    app.state.node = state
    return NodeAuth(app, state.key)
