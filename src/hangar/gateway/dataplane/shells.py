"""InvokeAgentRuntimeCommandShell: ``GET /runtimes/{agentRuntimeArn}/ws/shells`` (WebSocket) to a pty in a session.

Authenticated like ``/ws`` (SigV4 headers with the session id header, a presigned URL with the session id in the
query, or a bearer token, also as the subprotocol ``base64UrlBearerAuthorization.<base64url token>`` since browsers
cannot set headers). The frames (``sessions/shell_relay.py``) are served here for a local session; for a session on
a cluster node (``hangar serve --cluster``) the node serves them and this handler relays them both ways unchanged,
close codes included. The shell itself lives in ``sessions/shells.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid

from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection

from hangar.domain.errors import HangarError
from hangar.gateway.dataplane.common import (
    EMPTY_SHA256,
    SESSION_HEADER,
    authorized_target,
    services_of,
    session_id_of,
)
from hangar.gateway.dataplane.websocket import relay
from hangar.gateway.errors import error_response
from hangar.sessions.shell_relay import DEFAULT_SIZE, ShellRelay, shell_id_of
from hangar.sessions.shells import shells_of

SHELL_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Shell-Id"
BEARER_PROTOCOL = "base64UrlBearerAuthorization"


async def shell_socket(websocket: WebSocket, params: dict[str, str]) -> None:
    request_id = str(uuid.uuid4())
    offered = _bearer_from_subprotocol(websocket)
    try:
        services, manager = services_of(websocket)
        session_id = session_id_of(websocket, from_query=True)
        shell_id = shell_id_of(websocket.query_params.get("shellId"))
        target = await authorized_target(services, websocket, params, EMPTY_SHA256)
        async with manager.call(target, session_id) as lease:  # Active while a client is attached
            subprotocol = BEARER_PROTOCOL if offered else None
            headers = [(SHELL_ID_HEADER.encode(), shell_id.encode()), (SESSION_HEADER.encode(), session_id.encode())]
            remote = getattr(lease, "open_shell", None)  # a session on a cluster node (cluster/remote.py)
            if remote is not None:
                await _relay_node(websocket, await remote(shell_id), subprotocol, headers)
                return
            registry = shells_of(manager)
            attachment, reconnected = await registry.attach(lease.session, shell_id, *DEFAULT_SIZE)
            try:
                await websocket.accept(subprotocol=subprotocol, headers=headers)
                await ShellRelay(websocket, registry, attachment).run(reconnected)
            finally:
                registry.detach(attachment)
    except HangarError as exc:
        await _deny(websocket, exc, request_id)


async def _relay_node(
    websocket: WebSocket, node: ClientConnection, subprotocol: str | None, headers: list[tuple[bytes, bytes]]
) -> None:
    """The node attached the shell (its refusals were raised before this): frames pass both ways as they are."""
    async with node:
        await websocket.accept(subprotocol=subprotocol, headers=headers)
        await relay(websocket, node)


def _bearer_from_subprotocol(websocket: WebSocket) -> bool:
    """A browser's bearer token rides as a subprotocol: make it the ``Authorization`` header authentication reads.
    Never over an ``Authorization`` the client sent itself (a SigV4 signature wins, and so does its own bearer)."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    token = next((p.removeprefix(BEARER_PROTOCOL + ".") for p in offered if p.startswith(BEARER_PROTOCOL + ".")), None)
    if token is None:
        return False
    if "authorization" not in websocket.headers:
        try:
            decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        if decoded and decoded.isprintable():
            scope = websocket.scope
            scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {decoded}".encode())]
            websocket.__dict__.pop("_headers", None)  # Starlette caches the headers: read them again
    return BEARER_PROTOCOL in offered


async def _deny(websocket: WebSocket, error: HangarError, request_id: str) -> None:
    """Refuse the upgrade with the AWS-shaped HTTP error, or with close code 1008 once it is accepted."""
    if websocket.client_state.name == "CONNECTING" and "websocket.http.response" in websocket.scope.get(
        "extensions", {}
    ):
        await websocket.send_denial_response(error_response(error, request_id))
    else:
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1008, reason=f"{error.code}: {error.message}"[:120])
