"""InvokeAgentRuntime: ``POST /runtimes/{agentRuntimeArn}/invocations`` streamed to the session's agent and back.

Order: spool + hash the body, authenticate and resolve the target (``common.authorized_target``), get or start
the session, send the body to the agent, answer with the agent's status and headers as soon as they arrive, then
pass the body through chunk by chunk.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.domain.errors import RuntimeClientError
from hangar.gateway.dataplane import mcp
from hangar.gateway.dataplane.body import spool_body
from hangar.gateway.dataplane.common import (
    agent_headers,
    authorized_target,
    call_agent,
    echo_headers,
    identity_headers,
    services_of,
    session_id_of,
)
from hangar.gateway.proxy import StreamedResponse
from hangar.observability import tracing
from hangar.observability.tracing import Invocation

ROUTE = "/runtimes/{agentRuntimeArn}/invocations"
# An answer of at most WHOLE_LIMIT bytes whose body is not all in with its head is awaited up to WHOLE_WAIT_S
# (it is usually microseconds behind), so that it leaves in one write rather than as a stream.
WHOLE_LIMIT = 64 * 1024
WHOLE_WAIT_S = 0.002


async def invoke(request: Request, params: dict[str, str]) -> Response:
    traced = tracing.begin(request, ROUTE)  # the server span; ends with the stream (or here, on an error)
    try:
        return await _invoke(request, params, traced)
    except BaseException as exc:
        traced.end(exc)
        raise


async def _invoke(request: Request, params: dict[str, str], traced: Invocation) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request)
    body = await spool_body(request, services.settings.data_dir)
    try:
        with traced.step("hangar.auth"):
            target = await authorized_target(services, request, params, body.sha256)
        minted = identity_headers(services, request, target)  # refuses a user-id header before a session starts
        is_mcp = target.protocol == "MCP"
        if is_mcp:
            session_id = mcp.sticky_session(request, manager, target, session_id)
        traced.target(target, session_id)
        starting = traced.session_start(manager, target, session_id)
        async with manager.call(target, session_id) as lease:
            traced.session_ready(starting, lease.session)
            headers = agent_headers(
                request.headers,
                lease.session.target,
                session_id,
                request.state.request_id,
                add_mcp_session=not (is_mcp and mcp.is_initialize(body.content())),
            )
            headers += minted
            if "content-type" not in request.headers:
                headers.append(("content-type", "application/json"))  # boto3 sends none for a blob payload
            headers.append(("content-length", str(body.size)))
            headers = traced.agent_call(headers, target)  # its traceparent / X-Amzn-Trace-Id reach the agent
            try:
                upstream = await call_agent(lease, "POST", lease.session.target.path, headers, body.content())
            except RuntimeClientError:
                if is_mcp and mcp.opened_here(request):  # no MCP session came of it: its sandbox must not linger
                    await manager.stop_session(
                        target.runtime_id, session_id, reason="MCP request refused by the server"
                    )
                raise
            out = [("content-type", upstream.headers.get("content-type") or "application/json")]
            if "content-length" in upstream.headers:
                out.append(("content-length", upstream.headers["content-length"]))
            out += echo_headers(request.headers, upstream.headers, session_id, mcp=is_mcp)
            if is_mcp:  # the id the client will send next: remembered so that it comes back to this session
                mcp_id = upstream.headers.get(mcp.MCP_SESSION) or request.headers.get(mcp.MCP_SESSION) or session_id
                mcp.remember_answer(request, manager, target, session_id, mcp_id)
            # Most answers arrive whole with their headers, or right behind them: no stream is needed for those.
            soon = getattr(upstream, "complete_body_soon", None)  # a cluster node's relayed answer is always streamed
            whole = upstream.complete_body() if soon is None else await soon(WHOLE_LIMIT, WHOLE_WAIT_S)
            # The session stays Active until the stream ends: the response releases the lease, exactly once.
            traced.streaming(upstream.status_code)
            ended = traced.on_end(lease.hand_off())
            return StreamedResponse(
                upstream.iter_raw(),
                upstream.status_code,
                out,
                close=upstream.aclose,
                on_end=ended,
                whole=whole,
            )
    finally:
        body.close()  # the agent has the whole body once its answer's headers arrived
