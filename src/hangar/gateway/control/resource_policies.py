"""PutResourcePolicy, GetResourcePolicy, DeleteResourcePolicy (the ARN is one percent-encoded path segment)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.control import resource_policies as policies
from hangar.gateway.control.wire import control, empty, json_body, render
from hangar.gateway.routing import Route


async def put_resource_policy(request: Request, params: dict[str, str]) -> Response:
    command = policies.parse_put(params["resourceArn"], await json_body(request))
    return render(await control(request).execute(command), 201)


async def get_resource_policy(request: Request, params: dict[str, str]) -> Response:
    return render(await control(request).execute(policies.parse_get(params["resourceArn"])))


async def delete_resource_policy(request: Request, params: dict[str, str]) -> Response:
    await control(request).execute(policies.parse_delete(params["resourceArn"]))
    return empty(204)


ROUTES = [
    Route("PUT", "/resourcepolicy/{resourceArn}", put_resource_policy, name="PutResourcePolicy"),
    Route("GET", "/resourcepolicy/{resourceArn}", get_resource_policy, name="GetResourcePolicy"),
    Route("DELETE", "/resourcepolicy/{resourceArn}", delete_resource_policy, name="DeleteResourcePolicy"),
]
