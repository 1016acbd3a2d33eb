"""Create/Get/Update/Delete/ListAgentRuntimeEndpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.control import commands
from hangar.gateway.control.wire import control, json_body, query, render
from hangar.gateway.routing import Route

BASE = "/runtimes/{agentRuntimeId}/runtime-endpoints/"


async def create_endpoint(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_create_endpoint(params["agentRuntimeId"], await json_body(request))
    return render(await control(request).execute(command), 202)


async def list_endpoints(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_list_endpoints(params["agentRuntimeId"], query(request))
    return render(await control(request).execute(command))


async def get_endpoint(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_get_endpoint(params["agentRuntimeId"], params["endpointName"])
    return render(await control(request).execute(command))


async def update_endpoint(request: Request, params: dict[str, str]) -> Response:
    body = await json_body(request, allow_empty=True)
    command = commands.parse_update_endpoint(params["agentRuntimeId"], params["endpointName"], body)
    return render(await control(request).execute(command), 202)


async def delete_endpoint(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_delete_endpoint(params["agentRuntimeId"], params["endpointName"], query(request))
    return render(await control(request).execute(command), 202)


ROUTES = [
    Route("PUT", BASE, create_endpoint, name="CreateAgentRuntimeEndpoint"),
    Route("POST", BASE, list_endpoints, name="ListAgentRuntimeEndpoints"),
    Route("GET", BASE + "{endpointName}/", get_endpoint, name="GetAgentRuntimeEndpoint"),
    Route("PUT", BASE + "{endpointName}/", update_endpoint, name="UpdateAgentRuntimeEndpoint"),
    Route("DELETE", BASE + "{endpointName}/", delete_endpoint, name="DeleteAgentRuntimeEndpoint"),
]
