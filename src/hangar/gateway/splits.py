"""Operator API beyond AWS: the traffic split of an endpoint (``hangar endpoints split``), SigV4-signed.

AgentCore has no such field, so GetAgentRuntimeEndpoint's answer stays exactly AWS's; the split lives here:

GET    /hangar/endpoints/{runtimeId}/{endpointName}/split  -> 200 {"agentRuntimeId", "endpointName", "routes":
                                                             [{"agentRuntimeVersion": "1", "weight": 90}, ...],
                                                             "baseVersion"}; routes [] when there is none
PUT    same, body {"routes": [{...}, {...}]}               -> 200 the same document (two versions, weights sum 100)
DELETE same                                                -> 200 the document with routes []
GET    same, ?runtimeSessionId=ID                          -> adds "agentRuntimeVersion": the version a NEW session
                                                             with that id starts on (what the data plane would pick)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.control import splits
from hangar.domain.errors import ValidationError
from hangar.gateway.routing import Route
from hangar.services import Services


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_split(request: Request, params: dict[str, str]) -> Response:
    services = _services(request)
    runtime_id, name = params["runtimeId"], params["endpointName"]
    document: dict[str, Any] = await asyncio.to_thread(splits.get_split, services.control.ctx, runtime_id, name)
    session_id = request.query_params.get("runtimeSessionId")
    if session_id:
        account = services.control.ctx.place.account_id
        target = await asyncio.to_thread(services.control.resolve_target, runtime_id, name, account, session_id)
        document["agentRuntimeVersion"] = target.version
    return JSONResponse(document)


async def put_split(request: Request, params: dict[str, str]) -> Response:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ValidationError(f"The body is not JSON: {exc}", reason="CannotParse") from exc
    routes = body.get("routes") if isinstance(body, dict) else None
    ctx = _services(request).control.ctx
    return JSONResponse(
        await asyncio.to_thread(splits.put_split, ctx, params["runtimeId"], params["endpointName"], routes)
    )


async def delete_split(request: Request, params: dict[str, str]) -> Response:
    ctx = _services(request).control.ctx
    return JSONResponse(await asyncio.to_thread(splits.delete_split, ctx, params["runtimeId"], params["endpointName"]))


_PATH = "/hangar/endpoints/{runtimeId}/{endpointName}/split"
ROUTES = [
    Route("GET", _PATH, get_split, name="GetEndpointSplit"),
    Route("PUT", _PATH, put_split, name="PutEndpointSplit"),
    Route("DELETE", _PATH, delete_split, name="DeleteEndpointSplit"),
]
