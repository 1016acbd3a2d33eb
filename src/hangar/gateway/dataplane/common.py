"""What every data-plane operation shares: which runtime and session, which headers reach the agent, and how a
request to the agent fails (always as a 424 RuntimeClientError the caller can read)."""

from __future__ import annotations

import time
import uuid
import weakref
from typing import Protocol

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from hangar.domain.errors import AccessDeniedError, RuntimeClientError, ValidationError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.types import Principal
from hangar.gateway import authn
from hangar.observability import tracing
from hangar.services import Services
from hangar.sessions.agent_http import AgentHttpError, AgentResponse, Body
from hangar.sessions.calls import Lease
from hangar.sessions.manager import SessionManager

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
REQUEST_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id"
CUSTOM_PREFIX = "x-amzn-bedrock-agentcore-runtime-custom-"
TRACE_HEADERS = ("x-amzn-trace-id", "traceparent", "tracestate", "baggage")
MCP_ECHO = ("mcp-session-id", "mcp-protocol-version")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_ECHO_ORDER = (*MCP_ECHO, *TRACE_HEADERS)  # answer headers taken from the agent's answer, else from the request
_ECHOED = frozenset(name.encode("latin-1") for name in _ECHO_ORDER)

USER_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-User-Id"
WAT_HEADER = "WorkloadAccessToken"
CALLBACK_HEADER = "OAuth2CallbackUrl"
ADMIN_PRINCIPAL = "admin"  # the one principal allowed to name the end user (AgentCore: InvokeAgentRuntimeForUser)
# Never forwarded, whatever the allowlist says: hop-by-hop, framing, Hangar's own authentication, and the identity
# headers Hangar sets itself (a caller-sent workload access token must never reach the agent).
_NEVER = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "workloadaccesstoken",
        "oauth2callbackurl",
    }
)
_SNIPPET = 1024


def services_of(conn: HTTPConnection) -> tuple[Services, SessionManager]:
    services: Services = conn.app.state.services
    return services, services.sessions


def resolve(services: Services, conn: HTTPConnection, params: dict[str, str]) -> InvocationTarget:
    """ARN or runtime id (+ ``accountId``) from the path, ``qualifier`` from the query → a READY version."""
    qualifier = conn.query_params.get("qualifier") or None
    # Synchronous by design: answers are cached in process, so the common case never touches the store.
    session_id = getattr(conn.state, "runtime_session_id", None)  # a traffic split picks the version by it
    with tracing.of(conn).step("hangar.resolve_version"):
        return services.control.resolve_target(
            params["agentRuntimeArn"], qualifier, conn.query_params.get("accountId"), session_id
        )


async def authorized_target(
    services: Services, conn: HTTPConnection, params: dict[str, str], payload_sha256: str
) -> InvocationTarget:
    """The caller is authenticated (before the runtime's existence is revealed, see authn) and may use it."""
    via = getattr(conn.state, "channel_caller", None)  # a session calling through its identity channel
    authenticate = authn.authenticate_then_resolve if via is None else via.authorize
    target, principal = await authenticate(conn, services, lambda: resolve(services, conn, params), payload_sha256)
    conn.state.principal = principal  # who called: ``identity_headers`` binds the workload access token to them
    return target


def session_id_of(conn: HTTPConnection, *, required: bool = False, from_query: bool = False) -> str:
    """The runtime session id (33 to 256 chars). Absent: a fresh uuid4, as boto3 would have sent, unless required."""
    value = conn.headers.get(SESSION_HEADER)
    if value is None and from_query:
        value = conn.query_params.get(SESSION_HEADER)
    if value is None:
        if required:
            raise ValidationError(f"The {SESSION_HEADER} header is required")
        value = str(uuid.uuid4())
    if not 33 <= len(value) <= 256:
        raise ValidationError(f"runtimeSessionId must be 33 to 256 characters long (got {len(value)})")
    if not value.isprintable() or not value.isascii():
        raise ValidationError("runtimeSessionId must be printable ASCII")
    conn.state.runtime_session_id = value
    return value


def agent_headers(
    inbound: Headers, target: InvocationTarget, session_id: str, request_id: str, *, add_mcp_session: bool = True
) -> list[tuple[str, str]]:
    """Only what the contract defines reaches the agent, plus the runtime's allowlist; never SigV4 material.

    An MCP request without ``Mcp-Session-Id`` gets the session id as one, unless ``add_mcp_session`` is False (an
    ``initialize``: a stateful server refuses an id it did not issue)."""
    out = [(SESSION_HEADER, session_id), (REQUEST_ID_HEADER, request_id)]
    allowed = {name.lower() for name in target.header_allowlist}
    mcp = target.protocol == "MCP"
    has_mcp_session = False
    for name, value in inbound.items():
        if name in _NEVER or name.startswith(("x-amz-", "sec-websocket-")) or name == SESSION_HEADER.lower():
            continue
        if name in ("content-type", "accept") or name in TRACE_HEADERS or name.startswith(CUSTOM_PREFIX):
            out.append((name, value))
        elif name.startswith("mcp-"):
            if mcp:
                out.append((name, value))
                has_mcp_session = has_mcp_session or name == "mcp-session-id"
        elif name.startswith("a2a-"):  # A2A-Version (absent means 0.3), A2A-Extensions
            if target.protocol == "A2A":
                out.append((name, value))
        elif name in allowed and not name.startswith("x-amzn-"):
            if name == "authorization" and not value.lower().startswith("bearer "):
                continue
            out.append((name, value))
    if mcp and not has_mcp_session and add_mcp_session:
        out.append(("Mcp-Session-Id", session_id))
    return out


def identity_headers(services: Services, conn: HTTPConnection, target: InvocationTarget) -> list[tuple[str, str]]:
    """``WorkloadAccessToken`` for the runtime's workload identity (named after the runtime id) and the caller: the
    bearer JWT's subject, else the user-id header (admins only, as AgentCore lets only callers with
    InvokeAgentRuntimeForUser set it), else no user; plus ``OAuth2CallbackUrl`` when the caller sent one."""
    plane = services.identity_data
    principal: Principal | None = getattr(conn.state, "principal", None)
    user: str | None = None
    user_token: str | None = None
    if principal is not None and principal.kind == "jwt":
        user = principal.subject
        user_token = _bearer_token(conn.headers.get("authorization", ""))
    elif (named := conn.headers.get(USER_ID_HEADER)) is not None:
        if principal is None or principal.name != ADMIN_PRINCIPAL:
            raise AccessDeniedError(f"Only an administrator may set the {USER_ID_HEADER} header.")
        if not 1 <= len(named) <= 128:
            raise ValidationError(f"{USER_ID_HEADER} must be 1 to 128 characters long")
        user = named
    if user_token is None:
        wat = _minted(plane.tokens, target.runtime_id, user)
    else:
        wat = plane.tokens.mint(target.runtime_id, user, user_token=user_token)  # carries the caller's own JWT
    out = [(WAT_HEADER, wat)]
    callback = conn.headers.get(CALLBACK_HEADER)
    if callback:
        out.append((CALLBACK_HEADER, callback))
    return out


class _RecentTokens:
    """WATs minted in the last ``REUSE_S`` per (workload, user): minting (a JWT, ~40 us) is most of what identity
    adds to a warm invoke, and a token minted a minute ago is the same grant with 59 of its 60 minutes left."""

    REUSE_S = 60.0
    LIMIT = 4096

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str | None], tuple[str, float]] = {}


class _Minter(Protocol):
    """What ``_minted`` needs of the identity plane's token service (``identity.tokens.WorkloadTokens``)."""

    def mint(self, workload: str, user_id: str | None, *, user_token: str | None = None) -> str: ...


_RECENT: weakref.WeakKeyDictionary[_Minter, _RecentTokens] = weakref.WeakKeyDictionary()


def _minted(tokens: _Minter, workload: str, user: str | None) -> str:
    recent = _RECENT.get(tokens)
    if recent is None:
        recent = _RECENT[tokens] = _RecentTokens()
    now = time.monotonic()
    found = recent.tokens.get((workload, user))
    if found is not None and now - found[1] < _RecentTokens.REUSE_S:
        return found[0]
    if len(recent.tokens) >= _RecentTokens.LIMIT:
        recent.tokens.clear()
    wat = tokens.mint(workload, user)
    recent.tokens[(workload, user)] = (wat, now)
    return wat


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def echo_headers(
    inbound: Headers, upstream: Headers | dict[str, str], session_id: str, *, mcp: bool = False
) -> list[tuple[str, str]]:
    """Headers of the answer besides Content-Type: the session id, MCP session, trace context.

    For MCP runtimes the ``Mcp-Session-Id`` Hangar added (when the caller sent none) is returned too.
    """
    out = [(SESSION_HEADER, session_id)]
    sent: dict[str, str] = {}  # one pass over the request's headers instead of one per echoed name
    for raw_name, raw_value in inbound.raw:
        if raw_name in _ECHOED:
            sent.setdefault(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
    for name in _ECHO_ORDER:
        value = upstream.get(name) or sent.get(name)
        if value is None and mcp and name == "mcp-session-id":
            value = session_id
        if value is not None:
            out.append((name, value))
    return out


async def call_agent(
    lease: Lease, method: str, path: str, headers: list[tuple[str, str]], body: Body = b""
) -> AgentResponse:
    """Send a request to the session's agent and return its open answer once the status and headers are in.

    The lease keeps the session Active (hand it to the streamed answer to keep it so until the stream ends). A
    connection failure, a crash, a non-HTTP answer or a status other than 2xx become RuntimeClientError.
    """
    response = await lease.request(method, path, headers, body)
    if response.status_code < 300:
        return response  # boto3 treats any other status as an error: it must be an AWS-shaped one
    try:
        snippet = await response.read(_SNIPPET)
    except AgentHttpError:
        snippet = b""
    finally:
        await response.aclose()
    text = snippet.decode("utf-8", "replace").strip() or "(empty body)"
    raise RuntimeClientError(f"Received error ({response.status_code}) from the agent: {text}")
