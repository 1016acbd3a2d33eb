"""The gateway's side of the node API: signed HTTP/1.1 requests to one node, bodies streamed both ways.

Every request carries ``X-Hangar-Node-Auth: <unix seconds>:<hex HMAC-SHA256(cluster key, "ts\\nMETHOD\\npath")>``
(the path as sent). A node's own refusal carries ``X-Hangar-Node-Error: <Code>`` and a JSON ``message``; any answer
without it is the agent's, relayed as is. One keep-alive connection pool per node; the data never goes through Ray.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection

from hangar.cluster import node_auth, node_versions
from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import ExecEvent

ERROR_HEADER = "x-hangar-node-error"
TARGET_HEADER = "X-Hangar-Target"
AGENT_HEADER_PREFIX = "X-Hangar-H-"
EXISTING_HEADER = "X-Hangar-Existing"  # only the node's live session: refused 404 NotFound rather than started
NOT_HERE = "NotFound"
SHELL_ID_HEADER = "X-Hangar-Shell-Id"
SHELL_MESSAGE = 1024 * 1024  # the node sends frames of at most 64 KiB
SHELL_OPEN_S = 660.0  # the node may first prepare the version (up to 10 minutes) and start the session
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer", "host"})
# The node takes no new session (draining, or at its own cap): the gateway tries another node.
REFUSALS = frozenset({"Full", "Draining", "NodeDraining", "ServiceQuotaExceededException"})


class NodeRefused(Exception):
    """The node (not its agent) refused the call: ``code`` says why (``Full``, ``Draining``, ``NotFound``, ...)."""

    def __init__(self, node: str, code: str, status: int, message: str) -> None:
        super().__init__(f"node {node} refused ({code}, {status}): {message}")
        self.node = node
        self.code = code
        self.status = status
        self.message = message


class NodeUnreachable(Exception):
    """The connection to the node failed or broke (it may have died)."""


class NodeNotConnected(NodeUnreachable):
    """No connection to the node could be made: nothing of the request reached it."""


def encode_target(target: InvocationTarget) -> str:
    return node_versions.encode_target(target.runtime_id, target.endpoint_name, target.version)


def session_path(runtime_id: str, session_id: str, tail: str = "") -> str:
    return f"/node/v1/sessions/{quote(runtime_id, safe='')}/{quote(session_id, safe='')}{tail}"


class RemoteResponse:
    """The agent's answer relayed by a node, shaped like ``sessions.agent_http.AgentResponse`` for the handlers."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}

    def complete_body(self) -> bytes | None:
        return None  # always streamed: the node relays the agent's answer as it comes

    async def iter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"the node's answer broke: {exc}") from exc

    async def read(self, limit: int) -> bytes:
        out = bytearray()
        async for chunk in self.iter_raw():
            out += chunk
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    async def aclose(self) -> None:
        await self._response.aclose()


# Bookkeeping calls (listing, stop) must not wait on a node that stopped answering: a host whose link is down sends
# no RST, and a read without a deadline would hold the gateway's watch (and every listing) forever. Agent calls keep
# no read deadline (a stream may be quiet for minutes); a dead node's sessions end through the watch.
CONTROL_TIMEOUT = httpx.Timeout(5.0)
STOP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)  # a stop waits for the sandbox's end (kill, unmount, netns)


class NodeClient:
    """One node's API, reached at ``address`` (http://host:port)."""

    def __init__(self, name: str, address: str, key: bytes) -> None:
        self.name = name
        self.address = address
        self._key = key
        self._http = httpx.AsyncClient(
            base_url=address,
            timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=None),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=None),
        )

    def _headers(self, method: str, path: str) -> dict[str, str]:
        return {node_auth.HEADER: node_auth.sign(self._key, method, path)}

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **self._headers(method, path)}
        request = self._http.build_request(method, path, headers=headers, **kwargs)
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise NodeNotConnected(f"node {self.name} at {self.address}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"node {self.name} at {self.address}: {exc}") from exc
        code = response.headers.get(ERROR_HEADER)
        if code is not None:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise NodeRefused(self.name, code, response.status_code, _message(body))
        return response

    async def request(
        self,
        target: InvocationTarget,
        session_id: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes],
        existing: bool = False,
    ) -> RemoteResponse:
        """Send one request to the session's agent through the node (which starts the session if need be, unless
        ``existing``: then a session the node does not run is refused with ``NotFound``)."""
        sent = [(AGENT_HEADER_PREFIX + k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        if existing:
            sent.append((EXISTING_HEADER, "1"))
        sent += [(TARGET_HEADER, encode_target(target)), ("X-Hangar-Agent-Method", method)]
        sent.append(("X-Hangar-Agent-Path", path))
        route = session_path(target.runtime_id, session_id, "/request")
        response = await self._send("POST", route, headers=dict(_merge(sent)), content=body)
        return RemoteResponse(response)

    async def exec(
        self, target: InvocationTarget, session_id: str, command: str, timeout: float
    ) -> AsyncGenerator[ExecEvent, None]:
        route = session_path(target.runtime_id, session_id, "/exec")
        headers = {TARGET_HEADER: encode_target(target)}
        response = await self._send("POST", route, headers=headers, json={"command": command, "timeout": timeout})
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield _event(json.loads(line))
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"node {self.name}: the command's output broke: {exc}") from exc
        finally:
            await response.aclose()

    async def websocket(
        self,
        target: InvocationTarget,
        session_id: str,
        headers: list[tuple[str, str]],
        subprotocols: list[str] | None,
        max_size: int,
    ) -> ClientConnection:
        """A WebSocket to the session's agent ``/ws``, relayed by the node (which starts the session if need be)."""
        from websockets.asyncio.client import connect

        route = session_path(target.runtime_id, session_id, "/ws")
        sent = [(AGENT_HEADER_PREFIX + k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        sent += [(TARGET_HEADER, encode_target(target)), ("X-Hangar-Agent-Path", "/ws")]
        sent.append((node_auth.HEADER, node_auth.sign(self._key, "GET", route)))
        return await connect(
            self.address.replace("http://", "ws://", 1) + route,
            additional_headers=sent,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            max_size=max_size,
            compression=None,
            user_agent_header=None,
            open_timeout=10,
        )

    async def shell(self, target: InvocationTarget, session_id: str, shell_id: str) -> ClientConnection:
        """A shell WebSocket on the node (``node_shells.py``): the node attached shell ``shell_id`` of the session
        (starting the session if need be) before this returns; its refusal (shell cap, draining, ...) raises."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        route = session_path(target.runtime_id, session_id, "/shells")
        sent = [(TARGET_HEADER, encode_target(target)), (SHELL_ID_HEADER, shell_id)]
        sent.append((node_auth.HEADER, node_auth.sign(self._key, "GET", route)))
        try:
            return await connect(
                self.address.replace("http://", "ws://", 1) + route,
                additional_headers=sent,
                max_size=SHELL_MESSAGE,
                compression=None,
                user_agent_header=None,
                open_timeout=SHELL_OPEN_S,
            )
        except InvalidStatus as exc:
            response = exc.response
            code = response.headers.get(ERROR_HEADER) or f"HTTP{response.status_code}"
            raise NodeRefused(self.name, code, response.status_code, _message(bytes(response.body or b""))) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise NodeUnreachable(f"node {self.name} at {self.address}: {type(exc).__name__}: {exc}") from exc

    async def stop(self, runtime_id: str, session_id: str) -> bool:
        """Stop the session on the node; False when the node has no such session."""
        try:
            response = await self._send("DELETE", session_path(runtime_id, session_id), timeout=STOP_TIMEOUT)
        except NodeRefused as exc:
            if exc.code == "NotFound" or exc.status == 404:
                return False
            raise
        try:
            doc = json.loads(await response.aread())
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"node {self.name} at {self.address}: {exc}") from exc
        finally:
            await response.aclose()
        return bool(doc.get("stopped")) if isinstance(doc, dict) else False

    async def sessions(self) -> list[dict[str, Any]]:
        return (await self.listing())[0]

    async def listing(self) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
        """The node's sessions (live, then recently ended) and the (runtime, session) keys it is starting now."""
        response = await self._send("GET", "/node/v1/sessions", timeout=CONTROL_TIMEOUT)
        try:
            doc = json.loads(await response.aread())
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"node {self.name} at {self.address}: {exc}") from exc
        finally:
            await response.aclose()
        found = doc.get("sessions", []) if isinstance(doc, dict) else doc
        starting = doc.get("starting", []) if isinstance(doc, dict) else []
        return [s for s in found if isinstance(s, dict)], {(str(k[0]), str(k[1])) for k in starting}

    async def aclose(self) -> None:
        await self._http.aclose()


def _merge(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Repeated agent headers joined the HTTP way (a dict keeps one value per name)."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        key = name.lower()
        merged[key] = (name, f"{merged[key][1]}, {value}") if key in merged else (name, value)
    return list(merged.values())


def _event(doc: dict[str, Any]) -> ExecEvent:
    data = base64.b64decode(doc.get("data") or "")
    return ExecEvent(doc["kind"], data, doc.get("exitCode"), bool(doc.get("timedOut")))


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500] or "(no message)"
    return str(doc.get("message") or doc.get("Message") or doc) if isinstance(doc, dict) else str(doc)
