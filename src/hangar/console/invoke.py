"""The invoke playground: the page, and the route its fetch() streams the agent's answer through.

The route calls the data plane's own steps (resolve the version, get or start the session, call the agent under a
lease) as the signed-in console user, and passes the body through chunk by chunk, so SSE events reach the page as the
agent sends them. Runtimes with a customJWTAuthorizer accept bearer tokens only, here as on the data plane.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hangar.console import auth
from hangar.console.render import page
from hangar.control import commands as c
from hangar.domain.errors import AccessDeniedError, HangarError, RuntimeClientError, ValidationError
from hangar.sessions.agent_http import AgentHttpError

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
REQUEST_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id"
MAX_PAYLOAD = 1024 * 1024
_SNIPPET = 1024


def valid_session_id(session_id: str) -> None:
    if not 33 <= len(session_id) <= 256 or not session_id.isascii() or not session_id.isprintable():
        raise ValidationError("runtimeSessionId must be 33 to 256 printable ASCII characters")


@auth.signed_in
async def playground(request: Request, _params: dict[str, str]) -> Response:
    control = request.app.state.services.control
    listed = (await control.execute(c.ListRuntimes(max_results=100)))["agentRuntimes"]
    return page(
        request,
        "invoke.html",
        runtimes=[r for r in listed if r["status"] == "READY"],
        chosen=request.query_params.get("runtime", ""),
        session_id=f"console-{uuid.uuid4()}",
    )


@auth.signed_in
async def invoke(request: Request, params: dict[str, str]) -> Response:
    """POST the payload to the runtime's agent; answer with its status, content type and streamed body."""
    session = request.state.console
    if not auth.csrf_ok(session, request.headers.get("x-csrf-token")):
        return JSONResponse({"message": "Missing or wrong CSRF token."}, status_code=403)
    try:
        return await _invoke(request, params["runtimeId"])
    except HangarError as exc:
        return JSONResponse({"__type": exc.code, "message": exc.message}, status_code=exc.status)


async def _invoke(request: Request, runtime_id: str) -> Response:
    services = request.app.state.services
    body = await request.body()
    if len(body) > MAX_PAYLOAD:
        raise ValidationError(f"The playground sends at most {MAX_PAYLOAD} bytes")
    session_id = request.query_params.get("sessionId") or f"console-{uuid.uuid4()}"
    valid_session_id(session_id)
    qualifier = request.query_params.get("qualifier") or None
    principal = request.state.console.principal
    target = services.control.resolve_target(runtime_id, qualifier, principal.account_id, session_id)
    if target.jwt_authorizer is not None:
        raise AccessDeniedError("This runtime accepts OAuth bearer tokens only; the console signs in with a key.")
    headers = [
        (SESSION_HEADER, session_id),
        (REQUEST_ID_HEADER, str(uuid.uuid4())),
        ("content-type", request.headers.get("content-type") or "application/json"),
        ("accept", "text/event-stream, application/json"),
        ("WorkloadAccessToken", services.identity_data.tokens.mint(target.runtime_id, None)),
        ("content-length", str(len(body))),
    ]
    manager = services.sessions
    async with manager.call(target, session_id) as lease:
        upstream = await lease.request("POST", lease.session.target.path, headers, body)  # 424 when it fails
        if upstream.status_code >= 300:
            try:
                snippet = await upstream.read(_SNIPPET)
            finally:
                await upstream.aclose()
            text = snippet.decode("utf-8", "replace").strip() or "(empty body)"
            raise RuntimeClientError(f"Received error ({upstream.status_code}) from the agent: {text}")
        release = lease.hand_off()

        async def relay() -> AsyncIterator[bytes]:
            complete = False
            try:
                async for chunk in upstream.iter_raw():
                    yield chunk
                complete = True
            except AgentHttpError as exc:
                yield f"\n[console] the agent's stream broke: {json.dumps(str(exc))}\n".encode()
            finally:
                await upstream.aclose()
                await release(complete)

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type") or "application/json",
            headers={SESSION_HEADER: session_id, "cache-control": "no-store", "x-accel-buffering": "no"},
        )
