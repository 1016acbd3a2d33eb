"""WebSocket ``GET /runtimes/{agentRuntimeArn}/ws``: authenticated like an invocation, then relayed both ways to
the agent's ``/ws`` over the sandbox's Unix socket.

Text and binary frames pass unchanged; close codes and reasons pass in both directions. Pings are answered hop
by hop (the server answers the client's, the agent answers Hangar's), as ASGI does not expose them. A request
refused before the upgrade gets the AWS-shaped HTTP error (denial response) where the server supports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from hangar.domain.errors import HangarError, RuntimeClientError
from hangar.gateway.dataplane.common import (
    EMPTY_SHA256,
    agent_headers,
    authorized_target,
    identity_headers,
    services_of,
    session_id_of,
)
from hangar.gateway.errors import error_response
from hangar.observability import tracing
from hangar.observability.tracing import Invocation
from hangar.sessions.calls import Lease

log = logging.getLogger("hangar.gateway")

MAX_MESSAGE = 16 * 1024 * 1024
_UNSENDABLE = {1005, 1006, 1015}  # reserved: reported locally, never sent in a close frame
ROUTE = "/runtimes/{agentRuntimeArn}/ws"


async def websocket_proxy(websocket: WebSocket, params: dict[str, str]) -> None:
    traced = tracing.begin(websocket, ROUTE)  # the server span lasts as long as the WebSocket
    try:
        await _proxy(websocket, params, traced)
    except BaseException as exc:
        traced.end(exc)
        raise
    traced.end()


async def _proxy(websocket: WebSocket, params: dict[str, str], traced: Invocation) -> None:
    request_id = str(uuid.uuid4())
    try:
        services, manager = services_of(websocket)
        session_id = session_id_of(websocket, from_query=True)
        with traced.step("hangar.auth"):
            target = await authorized_target(services, websocket, params, EMPTY_SHA256)
        traced.target(target, session_id)
        minted = identity_headers(services, websocket, target)
        starting = traced.session_start(manager, target, session_id)
        session = await manager.get_or_start(target, session_id)
        traced.session_ready(starting, session)
    except HangarError as exc:
        await _deny(websocket, exc, request_id)
        traced.end(exc)
        return
    async with manager.use(session) as lease:  # Active for as long as the WebSocket is open
        await _relay(websocket, lease, session_id, request_id, minted)


async def _relay(
    websocket: WebSocket, lease: Lease, session_id: str, request_id: str, minted: list[tuple[str, str]]
) -> None:
    headers = agent_headers(websocket.headers, lease.session.target, session_id, request_id) + minted
    headers = tracing.of(websocket).agent_call(headers, lease.session.target)  # the span lasts as long as the relay
    requested = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    remote = getattr(lease, "open_websocket", None)  # a session on a cluster node (cluster/remote.py)
    try:
        agent = await (
            remote(headers, requested or None, MAX_MESSAGE)
            if remote is not None
            else unix_connect(
                lease.socket_path,
                uri="ws://agent/ws",
                additional_headers=headers,
                subprotocols=requested or None,
                max_size=MAX_MESSAGE,
                compression=None,
                user_agent_header=None,
                open_timeout=10,
            )
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        ended = await lease.broken()
        cause = "the agent process exited" if ended else f"{type(exc).__name__}: {exc}"
        await _deny(websocket, RuntimeClientError(f"The agent refused the WebSocket ({cause})"), request_id)
        return
    async with agent:
        await websocket.accept(subprotocol=agent.subprotocol)
        await relay(websocket, agent)


async def relay(websocket: WebSocket, agent: ClientConnection) -> None:
    """Frames both ways between an accepted client and the agent (or a node) until either side ends."""
    upstream = asyncio.create_task(_client_to_agent(websocket, agent))
    downstream = asyncio.create_task(_agent_to_client(websocket, agent))
    try:
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream):
            task.cancel()
        await asyncio.gather(upstream, downstream, return_exceptions=True)


async def _client_to_agent(websocket: WebSocket, agent: ClientConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1000)
            await agent.close(code=1000 if code in _UNSENDABLE else code, reason=message.get("reason") or "")
            return
        try:
            if message.get("text") is not None:
                await agent.send(message["text"])
            elif message.get("bytes") is not None:
                await agent.send(message["bytes"])
        except ConnectionClosed:
            return  # the other pump reports the agent's close


async def _agent_to_client(websocket: WebSocket, agent: ClientConnection) -> None:
    try:
        async for data in agent:
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)
    except ConnectionClosed:
        pass
    except WebSocketDisconnect:
        return
    received = agent.protocol.close_rcvd
    code = received.code if received is not None else 1011
    reason = received.reason if received is not None else "the agent's connection ended without a close frame"
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=1000 if code in _UNSENDABLE else code, reason=reason)


async def _deny(websocket: WebSocket, error: HangarError, request_id: str) -> None:
    """Refuse the upgrade with the AWS-shaped HTTP error, or with close code 1008 where that is impossible."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error, request_id))
    else:
        await websocket.close(code=1008, reason=f"{error.code}: {error.message}"[:120])
