"""Create/Get/Update/Delete/ListAgentRuntimes and ListAgentRuntimeVersions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.control import commands
from hangar.gateway.control.wire import control, json_body, query, render
from hangar.gateway.routing import Route


async def create_runtime(request: Request, _params: dict[str, str]) -> Response:
    command = commands.parse_create_runtime(await json_body(request))
    return render(await control(request).execute(command), 202)


async def list_runtimes(request: Request, _params: dict[str, str]) -> Response:
    command = commands.parse_list_runtimes(query(request))
    return render(await control(request).execute(command))


async def get_runtime(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_get_runtime(params["agentRuntimeId"], query(request))
    return render(await control(request).execute(command))


async def update_runtime(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_update_runtime(params["agentRuntimeId"], await json_body(request))
    return render(await control(request).execute(command), 202)


async def delete_runtime(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_delete_runtime(params["agentRuntimeId"], query(request))
    return render(await control(request).execute(command), 202)


async def list_versions(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_list_versions(params["agentRuntimeId"], query(request))
    return render(await control(request).execute(command))


ROUTES = [
    Route("PUT", "/runtimes/", create_runtime, name="CreateAgentRuntime"),
    Route("POST", "/runtimes/", list_runtimes, name="ListAgentRuntimes"),
    Route("GET", "/runtimes/{agentRuntimeId}/", get_runtime, name="GetAgentRuntime"),
    Route("PUT", "/runtimes/{agentRuntimeId}/", update_runtime, name="UpdateAgentRuntime"),
    Route("DELETE", "/runtimes/{agentRuntimeId}/", delete_runtime, name="DeleteAgentRuntime"),
    Route("POST", "/runtimes/{agentRuntimeId}/versions/", list_versions, name="ListAgentRuntimeVersions"),
]
