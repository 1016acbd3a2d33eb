"""Request/response helpers shared by the control-plane handlers."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hangar.control.commands import Query
from hangar.control.service import ControlPlane
from hangar.domain.validation import parse_json_object


def control(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.services.control
    return plane


async def json_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    return parse_json_object(await request.body(), allow_empty=allow_empty)


def query(request: Request) -> Query:
    params = request.query_params
    return {key: params.getlist(key) for key in params}


def render(document: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


def empty(status: int) -> Response:
    return Response(status_code=status)
