"""Identity data-plane routes (``bedrock-agentcore``): workload access tokens, API keys, OAuth2 tokens, and the
OAuth2 callback a user's browser reaches after consenting at the IdP.

``DATA_ROUTES`` are the signed operations; the sandbox identity channel mounts them too, with a session principal
(``request.state.principal``). ``ROUTES`` adds the callback, which is public (a browser, no signature): its only
credential is the ``state`` it carries, checked strictly by the use case.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hangar.domain.types import Principal
from hangar.domain.validation import parse_json_object
from hangar.gateway.routing import Route
from hangar.identity.dataplane import IdentityDataPlane

Operation = Callable[[IdentityDataPlane, Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


def _plane(request: Request) -> IdentityDataPlane:
    plane: IdentityDataPlane = request.app.state.services.identity_data
    return plane


def _handler(operation: Operation) -> Callable[[Request, dict[str, str]], Awaitable[Response]]:
    async def handle(request: Request, _params: dict[str, str]) -> Response:
        body = parse_json_object(await request.body())
        result = await operation(_plane(request), request.state.principal, body)
        return Response(json.dumps(result, separators=(",", ":")), media_type="application/json")

    return handle


async def oauth2_callback(request: Request, params: dict[str, str]) -> Response:
    query = {key: request.query_params[key] for key in ("state", "code", "error") if key in request.query_params}
    target = await _plane(request).oauth2_callback(query, params.get("callbackId"))
    if target is not None:
        return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})
    page = "<!doctype html><title>Authorization complete</title><p>{}</p>".format(
        html.escape(
            "Consent recorded. The application that asked for it must now confirm it was you "
            "(CompleteResourceTokenAuth) before the agent receives the token. You can close this window."
        )
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


DATA_ROUTES = [
    Route(
        "POST",
        "/identities/GetWorkloadAccessToken",
        _handler(IdentityDataPlane.get_workload_access_token),
        name="GetWorkloadAccessToken",
    ),
    Route(
        "POST",
        "/identities/GetWorkloadAccessTokenForJWT",
        _handler(IdentityDataPlane.get_workload_access_token_for_jwt),
        name="GetWorkloadAccessTokenForJWT",
    ),
    Route(
        "POST",
        "/identities/GetWorkloadAccessTokenForUserId",
        _handler(IdentityDataPlane.get_workload_access_token_for_user_id),
        name="GetWorkloadAccessTokenForUserId",
    ),
    Route("POST", "/identities/api-key", _handler(IdentityDataPlane.get_resource_api_key), name="GetResourceApiKey"),
    Route(
        "POST",
        "/identities/oauth2/token",
        _handler(IdentityDataPlane.get_resource_oauth2_token),
        name="GetResourceOauth2Token",
    ),
    Route(
        "POST",
        "/identities/CompleteResourceTokenAuth",
        _handler(IdentityDataPlane.complete_resource_token_auth),
        name="CompleteResourceTokenAuth",
    ),
]

ROUTES = [
    *DATA_ROUTES,
    Route("GET", "/identities/oauth2/callback/{callbackId+}", oauth2_callback, name="OAuth2Callback", auth="none"),
    Route("GET", "/identities/oauth2/callback", oauth2_callback, name="OAuth2CallbackBare", auth="none"),
]
