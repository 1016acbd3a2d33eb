"""Agent-to-agent calls: a session calls another runtime through its identity channel, as its own runtime.

On ``identity.sock`` a session may also send InvokeAgentRuntime (``POST`` and the MCP ``DELETE`` of
``/runtimes/{arn}/invocations``) and GetAgentCard (the A2A well-known card path). They run through the very
data-plane handlers of the main port, streamed both ways (the request body is fed to the handler as it arrives, the
answer is written chunk by chunk), with one difference in who the caller is:

* SigV4-signed with the session's own keys (botocore does that with no configuration inside a sandbox): the caller
  is the session; it is allowed only when the target's resource-based policy allows its runtime's ``roleArn`` or
  its workload identity the action (``control/resource_policies.py``; explicit Deny wins, default deny).
* ``Authorization: Bearer``: the target's customJWTAuthorizer checks the token, exactly as on the main port.

Call chains are kept here, not carried by the agents (an agent could drop or forge a header): while a session
serves a call made by another session, that call's chain is recorded against it, so a call that would come back to
a session already in its chain is refused, and so is a chain deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import h11
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Scope

from hangar.domain.errors import AccessDeniedError, HangarError, ValidationError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.resource_policy import GET_CARD, INVOKE
from hangar.domain.types import Principal
from hangar.gateway import authn, dataplane
from hangar.gateway.errors import error_response, unexpected_error_response
from hangar.gateway.routing import HttpHandler, RouteTable
from hangar.services import Services
from hangar.sessions.identity import Binding

if TYPE_CHECKING:
    from hangar.gateway.identity_channel import IdentityChannel

MAX_DEPTH = 8  # session-to-session hops in one chain
MAX_UNREAD = 1024 * 1024  # past this, an unread request body closes the connection instead
SESSION_HEADER = b"x-amzn-bedrock-agentcore-runtime-session-id"
_ACTIONS = {"InvokeAgentRuntime": INVOKE, "EndMcpSession": INVOKE, "GetAgentCard": GET_CARD}
SessionKey = tuple[str, str]  # (runtime id, runtime session id)


@dataclass(frozen=True)
class _Link:
    """What a session serving a call knows of the chain that reached it."""

    ancestors: frozenset[SessionKey]
    depth: int


class CallChains:
    """The chains of the calls sessions are serving now (only calls made by sessions are recorded)."""

    def __init__(self) -> None:
        self.serving: dict[SessionKey, Counter[_Link]] = {}

    def enter(self, caller: SessionKey, callee: SessionKey) -> _Link:
        """Record that ``callee`` serves a call from ``caller``; refused if it loops or goes too deep."""
        links = self.serving.get(caller, Counter())
        ancestors = frozenset({caller}.union(*(link.ancestors for link in links)))
        depth = 1 + max((link.depth for link in links), default=0)
        if callee in ancestors:
            raise ValidationError(
                f"Call loop refused: session {callee[1]} of runtime {callee[0]} is already in this call chain"
            )
        if depth > MAX_DEPTH:
            raise ValidationError(f"Call chain too deep: at most {MAX_DEPTH} session-to-session calls in a chain")
        link = _Link(ancestors, depth)
        self.serving.setdefault(callee, Counter())[link] += 1
        return link

    def leave(self, callee: SessionKey, link: _Link) -> None:
        links = self.serving.get(callee)
        if links is None:
            return
        links[link] -= 1
        if links[link] <= 0:
            del links[link]
        if not links:
            del self.serving[callee]


@dataclass
class ChannelCaller:
    """Set as ``request.state.channel_caller`` on a call from a session; ``common.authorized_target`` asks it."""

    channel: IdentityChannel
    binding: Binding
    action: str
    chains: CallChains
    entered: list[tuple[SessionKey, _Link]] = field(default_factory=list)

    async def authorize(
        self,
        conn: HTTPConnection,
        services: Services,
        resolve: Callable[[], InvocationTarget],
        payload_sha256: str,
    ) -> tuple[InvocationTarget, Principal]:
        signed = authn.signed_request(conn)
        if services.sigv4.carries_signature(signed):
            principal = await self.channel.session_principal(self.binding, conn, payload_sha256)
            target = resolve()
            if target.jwt_authorizer is not None:
                raise AccessDeniedError(
                    "Authorization method mismatch. This runtime accepts OAuth bearer tokens only: get one with "
                    "GetResourceOauth2Token and send it as 'Authorization: Bearer <token>'."
                )
            await services.control.policies.authorize(
                self.binding.runtime_id, self.binding.version, target, self.action
            )
        else:  # a bearer token (or nothing): the target's authorizer decides, as on the main port
            target, principal = await authn.authenticate_then_resolve(conn, services, resolve, payload_sha256)
        caller = (self.binding.runtime_id, self.binding.session_id or self.binding.sandbox_id)
        callee = (target.runtime_id, conn.headers.get(SESSION_HEADER.decode(), ""))
        self.entered.append((callee, self.chains.enter(caller, callee)))
        return target, principal

    def leave(self) -> None:
        while self.entered:
            self.chains.leave(*self.entered.pop())


class AgentCalls:
    """The channel's agent-to-agent part: which requests it takes, and serving one on an h11 connection."""

    def __init__(self, channel: IdentityChannel) -> None:
        self.channel = channel
        self.table = RouteTable([route for route in dataplane.ROUTES if route.name in _ACTIONS])
        self.chains = CallChains()

    def serves(self, event: h11.Request) -> bool:
        found, _ = self.table.resolve(event.method.decode("ascii"), _path(event))
        return found is not None

    async def serve(
        self,
        sandbox_id: str | None,
        conn: h11.Connection,
        event: h11.Request,
        next_event: Callable[[], Awaitable[Any]],
        write: Callable[[bytes], Awaitable[None]],
    ) -> None:
        """Answer one request (its body read as the handler asks for it); the caller then reuses or closes."""
        request_id = str(uuid.uuid4())
        headers = [(name.lower(), value) for name, value in event.headers]
        if not any(name == SESSION_HEADER for name, _ in headers):
            headers.append((SESSION_HEADER, str(uuid.uuid4()).encode()))  # boto3 always sends one; a chain needs it
        raw_path = event.target.decode("latin-1").partition("?")[0]
        found, _ = self.table.resolve(event.method.decode("ascii"), raw_path)
        assert found is not None  # serves() said so
        binding = self.channel.identities.binding(sandbox_id) if sandbox_id else None
        caller = (
            ChannelCaller(self.channel, binding, _ACTIONS[found.route.name], self.chains)
            if binding is not None
            else None
        )
        scope = http_scope(event, headers, self.channel.app, {"request_id": request_id, "channel_caller": caller})
        gone = asyncio.Event()
        body_done = False

        async def receive() -> Message:
            nonlocal body_done
            if not body_done:
                part = await next_event()
                if isinstance(part, h11.Data):
                    return {"type": "http.request", "body": bytes(part.data), "more_body": True}
                body_done = True
                if isinstance(part, h11.EndOfMessage):
                    return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        request = Request(scope, receive)
        try:
            try:
                if caller is None:
                    raise AccessDeniedError("This endpoint serves Hangar session sandboxes only.")
                response = await cast(HttpHandler, found.route.handler)(request, found.params)
            except HangarError as exc:
                response = error_response(exc, request_id)
            except Exception as exc:
                response = unexpected_error_response(exc, request_id)
            response.headers.setdefault("x-amzn-RequestId", request_id)
            status, out, chunks = await _streamed(response, scope, receive, gone)
            await write(conn.send(h11.Response(status_code=status, headers=out)) or b"")
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await write(conn.send(h11.Data(data=chunk)) or b"")
            await write(conn.send(h11.EndOfMessage()) or b"")
            drained = 0  # a body the handler did not read (a refused call, a GET): read past it, to keep the connection
            while not body_done and conn.their_state is h11.SEND_BODY and drained <= MAX_UNREAD:
                part = await next_event()
                if not isinstance(part, h11.Data):
                    break
                drained += len(part.data)
        finally:
            gone.set()
            if caller is not None:
                caller.leave()


async def _streamed(
    response: Response, scope: Scope, receive: Callable[[], Awaitable[Message]], gone: asyncio.Event
) -> tuple[int, list[tuple[bytes, bytes]], AsyncGenerator[bytes, None]]:
    """Run the ASGI response; return its status and headers once sent, and its body as it comes.

    Closing the body early tells the response its client left (``gone``); a response that ends without its final
    chunk (the agent's side broke) makes the body raise, so the connection is dropped, not ended cleanly."""
    queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=8)

    async def send(message: Message) -> None:
        await queue.put(message)

    async def run() -> None:
        try:
            await response(scope, receive, send)
        finally:
            await queue.put(None)

    task = asyncio.create_task(run())
    start = await queue.get()
    if start is None or start["type"] != "http.response.start":
        await task
        raise ConnectionAbortedError("the response sent no status")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"connection", b"transfer-encoding")]

    async def body() -> AsyncGenerator[bytes, None]:
        complete = ended = False
        try:
            while (message := await queue.get()) is not None:
                if message["type"] == "http.response.body":
                    if message.get("body"):
                        yield bytes(message["body"])
                    complete = complete or not message.get("more_body", False)
            ended = True
            if not complete:
                raise ConnectionAbortedError("the answer broke off")
        finally:
            if not ended:
                gone.set()
                while await queue.get() is not None:  # drain until the response has stopped
                    pass
            await asyncio.gather(task, return_exceptions=True)

    return int(start["status"]), headers, body()


def _path(event: h11.Request) -> str:
    return event.target.decode("latin-1").partition("?")[0]


def http_scope(event: h11.Request, headers: list[tuple[bytes, bytes]], app: Any, state: dict[str, Any]) -> Scope:
    """The ASGI scope of a request read off an identity channel (HTTPS as the SDKs see it, no socket addresses)."""
    raw_path, _, query = event.target.decode("latin-1").partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": event.method.decode("ascii"),
        "scheme": "https",
        "path": raw_path,
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": headers,
        "server": None,
        "client": None,
        "app": app,
        "state": state,
    }
