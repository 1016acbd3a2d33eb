"""TagResource, UntagResource, ListTagsForResource (the ARN is one percent-encoded path segment)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.control import commands
from hangar.gateway.control.wire import control, empty, json_body, query, render
from hangar.gateway.routing import Route


async def tag_resource(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_tag_resource(params["resourceArn"], await json_body(request))
    await control(request).execute(command)
    return empty(204)


async def untag_resource(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_untag_resource(params["resourceArn"], query(request))
    await control(request).execute(command)
    return empty(204)


async def list_tags(request: Request, params: dict[str, str]) -> Response:
    command = commands.parse_list_tags(params["resourceArn"])
    return render(await control(request).execute(command))


ROUTES = [
    Route("POST", "/tags/{resourceArn}", tag_resource, name="TagResource"),
    Route("DELETE", "/tags/{resourceArn}", untag_resource, name="UntagResource"),
    Route("GET", "/tags/{resourceArn}", list_tags, name="ListTagsForResource"),
]
