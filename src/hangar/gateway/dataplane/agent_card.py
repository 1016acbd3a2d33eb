"""GetAgentCard: the A2A agent card, fetched from the session's agent (``GET /.well-known/agent-card.json``).

The card is served pointing back through Hangar: every JSON-RPC interface URL (and a v0.3 card's ``url``) becomes
this runtime's invocation URL (on ``HANGAR_PUBLIC_URL`` when set, else the URL the card was asked on), whatever the
agent wrote (``http://localhost:9000/`` as SDKs default to, or a URL elsewhere: an agent cannot send its callers
past Hangar). Interfaces Hangar cannot carry (gRPC, HTTP+JSON) are dropped, so a client never picks one.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlsplit

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

log = logging.getLogger("hangar.gateway")

CARD_PATH = "/.well-known/agent-card.json"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "::", ""}
MAX_CARD = 1024 * 1024


async def get_agent_card(request: Request, params: dict[str, str]) -> Response:
    services, manager = services_of(request)
    session_id = session_id_of(request)
    target = await authorized_target(services, request, params, EMPTY_SHA256)
    if target.protocol != "A2A":
        raise ValidationError(
            f"GetAgentCard is only supported for A2A runtimes; {target.runtime_id} serves {target.protocol}"
        )
    async with manager.call(target, session_id) as lease:
        headers = agent_headers(request.headers, lease.session.target, session_id, request.state.request_id)
        upstream = await call_agent(lease, "GET", CARD_PATH, headers)
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
    if not isinstance(card, dict):
        raise RuntimeClientError("The agent's card is not a JSON object")
    base = (services.settings.public_url or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")
    url = f"{base}/runtimes/{quote(target.runtime_arn, safe='')}/invocations"
    if qualifier := request.query_params.get("qualifier"):
        url += f"?qualifier={quote(qualifier, safe='')}"
    foreign = through_hangar(card, url)
    if foreign:
        log.warning("the agent card of %s named %s; served with Hangar's URL instead", target.runtime_id, foreign)
    return Response(
        json.dumps(card, ensure_ascii=False),
        media_type="application/json",
        headers=dict(echo_headers(request.headers, upstream.headers, session_id)),
    )


def through_hangar(card: dict[str, Any], url: str) -> list[str]:
    """Point the card's JSON-RPC interfaces at ``url`` (in place); returns the non-local URLs it replaced."""
    foreign: list[str] = []

    def replace(old: object) -> str:
        if isinstance(old, str) and (urlsplit(old).hostname or "") not in _LOCAL_HOSTS and old != url:
            foreign.append(old)
        return url

    if "url" in card:  # v0.3: the main interface, transport ``preferredTransport`` (JSON-RPC unless said otherwise)
        card["url"] = replace(card["url"])
        card["preferredTransport"] = "JSONRPC"
    for key, binding_key in (("supportedInterfaces", "protocolBinding"), ("additionalInterfaces", "transport")):
        interfaces = card.get(key)
        if not isinstance(interfaces, list):
            continue
        card[key] = [
            {**item, "url": replace(item.get("url"))}
            for item in interfaces
            if isinstance(item, dict) and str(item.get(binding_key, "JSONRPC")).upper() == "JSONRPC"
        ]
    return foreign
