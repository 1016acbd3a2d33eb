"""The host end of every sandbox's identity channel: two Unix sockets, never reachable over TCP.

Inside a sandbox, its supervisor splices ``127.0.0.1:IDENTITY_PORT`` and ``127.0.0.1:CREDENTIALS_PORT`` to
``identity.sock`` (TLS, as ``bedrock-agentcore.<region>.amazonaws.com``) and ``credentials.sock`` (plain HTTP, for
botocore's container credentials provider) in a root-owned directory bound read-only into every sandbox. One pair of
sockets serves all sandboxes, so each connection is attributed by the kernel: SO_PEERCRED gives the peer's uid, the
sandbox backend maps it to the one sandbox leasing that uid, and ``SandboxIdentities`` says which runtime (workload)
and session that is. Nothing the sandbox sends can change that attribution.

* ``credentials.sock``: ``GET CREDENTIALS_PATH`` with the version's authorization token → that sandbox's own
  short-lived keys (minted on first fetch).
* ``identity.sock``: only the identity data-plane operations (``hangar.gateway.identity_data.DATA_ROUTES``), each
  SigV4-signed with the calling sandbox's own keys (verified by ``auth/sigv4.py`` against this table, with the
  session token compared too). The key must belong to the same sandbox as the peer uid; the handlers then see
  ``request.state.principal = Principal(kind="session", workload=..., session_id=...)``. It also serves a session's
  calls to runtimes (InvokeAgentRuntime, GetAgentCard: ``agent_calls.py``, streamed). Anything else is 404.

HTTP/1.1 is parsed with h11 (a uvicorn dependency): uvicorn would not tell the app its peer's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import h11
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from hangar.auth.credentials import SigningKey
from hangar.auth.sigv4 import SigV4Verifier
from hangar.domain.errors import AccessDeniedError, HangarError, NotFoundError
from hangar.domain.types import Principal
from hangar.gateway.agent_calls import AgentCalls, http_scope
from hangar.gateway.errors import error_response, unexpected_error_response
from hangar.gateway.identity_ca import IdentityCA
from hangar.gateway.identity_data import DATA_ROUTES
from hangar.gateway.routing import HttpHandler, RouteTable
from hangar.sessions.identity import (
    CREDENTIALS_PATH,
    CREDENTIALS_SOCKET,
    IDENTITY_SOCKET,
    Binding,
    SandboxIdentities,
    identity_host,
)

if TYPE_CHECKING:
    from hangar.services import Services

log = logging.getLogger("hangar.identity.channel")
PEERCRED = struct.Struct("3i")
MAX_BODY = 1024 * 1024  # identity requests are small JSON documents
IDLE_S = 60.0  # a kept-alive connection with nothing to say is closed
MAX_CONNECTIONS_PER_PEER = 32  # per sandbox, both sockets together; botocore pools 10 per client
READ_SIZE = 65536


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    sandbox_id: str | None


class _AppShim:
    """What handlers reach as ``request.app``: ``.state.services``, as on the main gateway."""

    def __init__(self, services: Services) -> None:
        self.state = type("State", (), {"services": services})()


class _SessionKeys:
    """The credential store ``SigV4Verifier`` asks for a signing key, backed by the sandboxes' own keys."""

    def __init__(self, identities: SandboxIdentities, account_id: str) -> None:
        self.identities = identities
        self.account_id = account_id

    async def signing_key(self, access_key_id: str) -> SigningKey | None:
        found = self.identities.by_access_key(access_key_id)
        if found is None:
            return None
        binding, keys = found
        return SigningKey(keys.access_key_id, self.account_id, f"sandbox/{binding.sandbox_id}", keys.secret)

    async def record_use(self, access_key_id: str) -> None:
        return None


class IdentityChannel:
    """Serves ``identity.sock`` and ``credentials.sock`` for every sandbox of this server."""

    def __init__(
        self, services: Services, identities: SandboxIdentities, socket_dir: Path, *, agent_calls: bool = True
    ) -> None:
        """On a ``hangar node`` (``agent_calls=False``), ``services`` is a ``cluster.node_identity.NodeIdentity``:
        only ``settings``, ``sessions`` and ``identity_data`` are read, and calls to runtimes are refused."""
        self.services = services
        self.agent_calls = agent_calls
        self.identities = identities
        self.socket_dir = socket_dir
        settings = services.settings
        self.ca = IdentityCA(settings.data_dir.resolve() / "identity-ca", identity_host(settings.region))
        self.verifier = SigV4Verifier(_SessionKeys(identities, settings.account_id), settings.region)
        self.table = RouteTable(list(DATA_ROUTES))
        self.calls = AgentCalls(self)  # sessions calling runtimes (agent_calls.py)
        self.app = _AppShim(services)
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[asyncio.Task[Any]] = set()
        self._open: Counter[str | int] = Counter()  # open connections per sandbox (else per peer uid)

    async def start(self) -> None:
        self.ca.write_bundle(self.socket_dir / "ca-bundle.pem")
        tls = self.ca.server_context()
        for name, handler, context in (
            (IDENTITY_SOCKET, self._identity, tls),
            (CREDENTIALS_SOCKET, self._credentials, None),
        ):
            path = self.socket_dir / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            extra: dict[str, Any] = {"ssl": context, "ssl_handshake_timeout": 10.0} if context else {}
            server = await asyncio.start_unix_server(self._serving(handler), path=str(path), **extra)
            os.chmod(path, 0o666)  # every sandbox uid may connect; the peer uid says who it is
            self._servers.append(server)
        log.info("identity channel serving %s", self.socket_dir)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._servers.clear()

    # -- connections -----------------------------------------------------------------------------------------

    def _serving(
        self, handler: Callable[[Peer, h11.Request, bytes], Awaitable[tuple[int, list[tuple[str, str]], bytes]]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            peer = self._peer(writer)
            # Keyed by sandbox, not uid: gVisor sessions all connect through its root-owned Gofer, so a uid key
            # would let one gVisor session use up every other gVisor session's budget.
            budget = peer.sandbox_id or peer.uid
            if self._open[budget] >= MAX_CONNECTIONS_PER_PEER or task is None:
                writer.close()  # the host's descriptors are not a sandbox's to exhaust
                return
            self._connections.add(task)
            self._open[budget] += 1
            try:
                await self._connection(peer, reader, writer, handler)
            except (ConnectionError, TimeoutError, h11.ProtocolError, OSError):
                pass
            finally:
                self._connections.discard(task)
                self._open[budget] -= 1
                if not self._open[budget]:
                    del self._open[budget]
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        return serve

    def _peer(self, writer: asyncio.StreamWriter) -> Peer:
        sock = writer.get_extra_info("socket")
        pid, uid, _ = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        return Peer(pid, uid, self.services.sessions.backend.sandbox_of_peer(pid, uid))

    async def _connection(
        self,
        peer: Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Callable[[Peer, h11.Request, bytes], Awaitable[tuple[int, list[tuple[str, str]], bytes]]],
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=READ_SIZE)

        async def next_event() -> Any:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                conn.receive_data(await asyncio.wait_for(reader.read(READ_SIZE), IDLE_S))

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        while True:
            event = await next_event()
            if not isinstance(event, h11.Request):
                return  # closed, or paused after a connection the client asked to close
            if handler == self._identity and self.calls.serves(event) and not self.agent_calls:
                await write(await self._refused_call(event, conn))  # at once; the body is never read
                return
            if handler == self._identity and self.calls.serves(event):  # agent to agent: streamed both ways
                await self.calls.serve(peer.sandbox_id, conn, event, next_event, write)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                continue
            body = bytearray()
            while not isinstance(part := await next_event(), h11.EndOfMessage):
                if isinstance(part, h11.ConnectionClosed):
                    return
                body += part.data
                if len(body) > MAX_BODY:
                    return
            status, headers, payload = await handler(peer, event, bytes(body))
            headers = [*headers, ("content-length", str(len(payload)))]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            writer.write(conn.send(h11.Data(data=payload)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _refused_call(self, event: h11.Request, conn: h11.Connection) -> bytes:
        """A call to a runtime from a session on a node: 403, and the connection closes (docs/cluster.md)."""
        request_id = str(uuid.uuid4())
        headers = [(name.lower(), value) for name, value in event.headers]
        scope = http_scope(event, headers, self.app, {"request_id": request_id})

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        refused = AccessDeniedError(
            "A session on a cluster node cannot call runtimes through its identity endpoint: call them through a "
            "gateway with credentials of your own"
        )
        status, out, payload = await _render(error_response(refused, request_id), scope, receive)
        out = [*out, ("content-length", str(len(payload))), ("connection", "close")]
        data = conn.send(h11.Response(status_code=status, headers=out)) or b""
        data += conn.send(h11.Data(data=payload)) or b""
        return data + (conn.send(h11.EndOfMessage()) or b"")

    # -- the credentials endpoint ----------------------------------------------------------------------------

    async def _credentials(
        self, peer: Peer, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """botocore's container provider: 200 with the keys, else an error it reports (it never retries a 4xx)."""
        # Connection: close, so no pooled connection outlives the fetch (a warm template must hold no socket).
        close = [("content-type", "application/json"), ("connection", "close")]
        binding = self.identities.binding(peer.sandbox_id) if peer.sandbox_id else None
        if binding is None:
            return 403, close, b'{"message": "not a Hangar session sandbox"}'
        if request.method != b"GET" or request.target.split(b"?", 1)[0] != CREDENTIALS_PATH.encode():
            return 404, close, b'{"message": "no such resource"}'
        sent = dict(request.headers).get(b"authorization", b"").decode("latin-1")
        expected = self.identities.authorization_token(binding.runtime_id, binding.version)
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return 403, close, b'{"message": "bad authorization token"}'
        keys = self.identities.credentials(binding.sandbox_id)
        if keys is None:
            return 403, close, b'{"message": "the sandbox ended"}'
        return 200, close, json.dumps(keys.document()).encode()

    # -- the identity endpoint -------------------------------------------------------------------------------

    async def _identity(self, peer: Peer, event: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        request_id = str(uuid.uuid4())
        target = event.target.decode("latin-1")
        raw_path = target.partition("?")[0]
        headers = [(name.lower(), value) for name, value in event.headers]
        scope = http_scope(event, headers, self.app, {"request_id": request_id})
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, receive)
        try:
            response = await self._dispatch(peer, request, raw_path, body)
        except HangarError as exc:
            response = error_response(exc, request_id)
        except Exception as exc:
            response = unexpected_error_response(exc, request_id)
        response.headers.setdefault("x-amzn-RequestId", request_id)
        return await _render(response, scope, receive)

    async def _dispatch(self, peer: Peer, request: Request, raw_path: str, body: bytes) -> Response:
        binding = self.identities.binding(peer.sandbox_id) if peer.sandbox_id else None
        if binding is None:
            raise AccessDeniedError("This endpoint serves Hangar session sandboxes only.")
        found, _ = self.table.resolve(request.method, raw_path)
        if found is None:
            raise NotFoundError(f"No identity operation matches {request.method} {raw_path}")
        request.state.principal = await self.session_principal(binding, request, hashlib.sha256(body).hexdigest())
        return await cast(HttpHandler, found.route.handler)(request, found.params)  # DATA_ROUTES are all HTTP

    async def session_principal(self, binding: Binding, conn: HTTPConnection, payload_sha256: str) -> Principal:
        """The session ``binding`` as the caller, when the request is signed with that session's own keys."""
        from hangar.gateway.authn import signed_request

        caller = await self.verifier.verify(signed_request(conn), payload_sha256)
        owned = self.identities.by_access_key(caller.key.access_key_id)
        if owned is None or owned[0] is not binding:
            raise AccessDeniedError("These credentials belong to another session.")
        token = conn.headers.get("x-amz-security-token", "")
        if not hmac.compare_digest(token.encode(), owned[1].token.encode()):
            raise AccessDeniedError("The security token included in the request is invalid.")
        return Principal(
            kind="session",
            account_id=self.services.settings.account_id,
            name=f"session/{binding.session_id or binding.sandbox_id}",
            access_key_id=caller.key.access_key_id,
            workload=binding.workload,
            session_id=binding.session_id,
        )


async def _render(response: Response, scope: Scope, receive: Receive) -> tuple[int, list[tuple[str, str]], bytes]:
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in message.get("headers", [])
                if k.lower() != b"content-length"
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await response(scope, receive, send)
    return status, headers, b"".join(chunks)


def build_identity_channel(services: Services) -> IdentityChannel | None:
    """The channel, when the session manager's backend can give sandboxes one (the process backend cannot)."""
    identities = services.sessions.identities
    if identities.socket_dir is None:
        return None
    return IdentityChannel(services, identities, identities.socket_dir)
