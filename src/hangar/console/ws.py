"""The playground's WebSocket: the browser's socket relayed to the agent's ``/ws`` in the session's sandbox.

Signed in by the console cookie; because a browser sends cookies with a WebSocket upgrade from any page, the upgrade
must also come from this origin and carry the session's CSRF token (``?csrf=``), else it is refused before accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed

from hangar.console import auth
from hangar.console.invoke import REQUEST_ID_HEADER, SESSION_HEADER, valid_session_id
from hangar.domain.errors import AccessDeniedError, HangarError

log = logging.getLogger("hangar.console")
WsHandler = Callable[[WebSocket, dict[str, str]], Awaitable[None]]


async def relay(websocket: WebSocket, params: dict[str, str]) -> None:
    session = auth.state_of(websocket).get(websocket.cookies.get(auth.COOKIE))
    origin = urlsplit(websocket.headers.get("origin", "")).netloc
    if (
        session is None
        or origin != websocket.headers.get("host")
        or not auth.csrf_ok(session, websocket.query_params.get("csrf"))
    ):
        await websocket.close(code=4403, reason="sign in to the console first")
        return
    services = websocket.app.state.services
    session_id = websocket.query_params.get("sessionId", "")
    try:
        valid_session_id(session_id)
        qualifier = websocket.query_params.get("qualifier") or None
        target = services.control.resolve_target(
            params["runtimeId"], qualifier, session.principal.account_id, session_id
        )
        if target.jwt_authorizer is not None:
            raise AccessDeniedError("This runtime accepts OAuth bearer tokens only.")
    except HangarError as exc:
        await websocket.close(code=4400, reason=exc.message[:120])
        return
    headers = [
        (SESSION_HEADER, session_id),
        (REQUEST_ID_HEADER, str(uuid.uuid4())),
        ("WorkloadAccessToken", services.identity_data.tokens.mint(target.runtime_id, None)),
    ]
    async with services.sessions.call(target, session_id) as lease:  # Active for as long as the relay lasts
        try:
            agent = await unix_connect(lease.socket_path, uri="ws://agent/ws", additional_headers=headers)
        except Exception as exc:
            log.info("console websocket to %s refused: %s", target.runtime_id, exc)
            await lease.broken()
            await websocket.close(code=1011, reason="the agent refused the WebSocket")
            return
        await websocket.accept()
        async with agent:
            await _both_ways(websocket, agent)


async def _both_ways(websocket: WebSocket, agent: ClientConnection) -> None:
    tasks = [asyncio.create_task(_to_agent(websocket, agent)), asyncio.create_task(_to_browser(websocket, agent))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    code = agent.close_code or 1000
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code if 1000 <= code < 5000 and code not in (1005, 1006) else 1011)


async def _to_agent(websocket: WebSocket, agent: ClientConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            await agent.close()
            return
        if message.get("text") is not None:
            await agent.send(message["text"])
        elif message.get("bytes") is not None:
            await agent.send(message["bytes"])


async def _to_browser(websocket: WebSocket, agent: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed, WebSocketDisconnect):
        async for message in agent:
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_bytes(message)
