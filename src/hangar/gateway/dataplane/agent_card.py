"""GetAgentCard: the A2A agent card, fetched from the session's agent (``GET /.well-known/agent-card.json``)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from hangar.domain.errors import RuntimeClientError, ValidationError
from hangar.gateway.dataplane.common import (
    EMPTY_SHA256,
    agent_headers,
    authorized_target,
    call_agent,
    echo_headers,
    services_of,
    session_id_of,
)
from hangar.sessions.agent_http import AgentHttpError

CARD_PATH = "/.well-known/agent-card.json"
MAX_CARD = 1024 * 1024


async def get_agent_card(request: Request, params: dict[str, str]) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request)
    target = await authorized_target(services, request, params, EMPTY_SHA256)
    if target.protocol != "A2A":
        raise ValidationError(
            f"GetAgentCard is only supported for A2A runtimes; {target.runtime_id} serves {target.protocol}"
        )
    session = await manager.get_or_start(target, session_id)
    headers = agent_headers(request.headers, session.target, session_id, request.state.request_id)
    upstream = await call_agent(manager, session, "GET", CARD_PATH, headers)
    try:
        raw = await upstream.read(MAX_CARD + 1)
        if len(raw) > MAX_CARD:
            raise RuntimeClientError(f"The agent card is larger than {MAX_CARD} bytes")
        card = json.loads(raw)
    except AgentHttpError as exc:
        raise RuntimeClientError(f"The agent's card could not be read: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise RuntimeClientError("The agent's card is not valid JSON") from exc
    finally:
        await upstream.aclose()
        session.finish()
    if not isinstance(card, dict):
        raise RuntimeClientError("The agent's card is not a JSON object")
    return Response(
        json.dumps(card, ensure_ascii=False),
        media_type="application/json",
        headers=dict(echo_headers(request.headers, upstream.headers, session_id)),
    )
