"""The node's interactive shells: ``GET /node/v1/sessions/{rt}/{sid}/shells`` (WebSocket, signed like every route).

A gateway authenticates the client and relays the frames unchanged; this node owns the shells of its sessions
(``sessions/shells.py``: the pty, the replay of up to 256 KB of missed output, takeover by a new client) and speaks
the protocol itself (``sessions/shell_relay.py``). So a client that reconnects through any gateway with its shell id
reaches the same shell: the session's binding leads every gateway to this node. Headers: ``X-Hangar-Target`` (as on
``/request``: the session starts if need be) and ``X-Hangar-Shell-Id`` (checked again here). A refusal before the
upgrade is an HTTP answer with ``X-Hangar-Node-Error`` (e.g. 402 ``ServiceQuotaExceededException``: this node already
runs ``MAX_SHELLS_PER_RUNTIME`` shells of the runtime), which the gateway turns into the client's AWS error.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.websockets import WebSocket

from hangar.cluster.node_versions import parse_target
from hangar.domain.errors import HangarError, ValidationError
from hangar.sessions.shell_relay import DEFAULT_SIZE, ShellRelay, shell_id_of
from hangar.sessions.shells import shells_of

log = logging.getLogger("hangar.cluster")

SHELL_ID_HEADER = "x-hangar-shell-id"


async def shell_websocket(websocket: WebSocket) -> None:
    """Attach the gateway's client to the session's shell (started on first use) and serve it until either ends."""
    from hangar.cluster.node_api import NodeState, _check_draining  # node_api mounts this route: import it late

    state: NodeState = websocket.app.state.node
    runtime_id, session_id = websocket.path_params["rt"], websocket.path_params["sid"]
    try:
        ref = parse_target(websocket.headers.get("x-hangar-target"))
        if ref[0] != runtime_id:
            raise ValidationError("X-Hangar-Target names another runtime than the path")
        shell_id = shell_id_of(websocket.headers.get(SHELL_ID_HEADER) or None)
        _check_draining(state, runtime_id, session_id)
        target = await state.versions.target(ref)
        registry = shells_of(state.manager)
        async with state.manager.call(target, session_id) as lease:  # Active while a client is attached
            attachment, reconnected = await registry.attach(lease.session, shell_id, *DEFAULT_SIZE)
            try:
                await websocket.accept()
                await ShellRelay(websocket, registry, attachment).run(reconnected)
            finally:
                registry.detach(attachment)
    except HangarError as exc:
        await _deny(websocket, exc)


async def _deny(websocket: WebSocket, error: HangarError) -> None:
    """The node's refusal as an HTTP answer the gateway reads (code header), or close 1008 once accepted."""
    from hangar.cluster.node_api import error_response

    log.info("node API: shell of %s refused: %s", websocket.path_params.get("sid"), error.message)
    if websocket.client_state.name == "CONNECTING" and "websocket.http.response" in websocket.scope.get(
        "extensions", {}
    ):
        await websocket.send_denial_response(error_response(error))
    else:
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1008, reason=f"{error.code}: {error.message}"[:120])
