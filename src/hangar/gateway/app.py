"""The ASGI application: lifespan, raw-path routing, authentication gate, error rendering.

Handlers live in one module per operation group (``health.py``, ``control/``, ``dataplane/``, ``operator.py``);
each exposes ``ROUTES``. This module only dispatches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from hangar.config import Settings
from hangar.domain.errors import HangarError, NotFoundError, ValidationError
from hangar.gateway import authn
from hangar.gateway.errors import error_response, unexpected_error_response
from hangar.gateway.routing import HttpHandler, Route, RouteTable, WebSocketHandler
from hangar.services import Services, build_services

log = logging.getLogger("hangar.gateway")

# Control-plane bodies are small JSON documents; the data plane streams and never goes through this cap.
MAX_SIGNED_BODY = 10 * 1024 * 1024


def collect_routes() -> list[Route]:
    """Every route of the server, in match order: one explicit table, each module imported by name."""
    from hangar import console
    from hangar.gateway import (
        artifacts,
        control,
        credentials,
        dataplane,
        ecr,
        health,
        identity_control,
        identity_data,
        metrics,
        nodes,
        operator,
        registry,
        splits,
    )

    return [
        *health.ROUTES,
        *(Route(method, path, handler, name, auth="none") for method, path, handler, name in console.PAGES),
        *metrics.ROUTES,
        *control.ROUTES,
        *dataplane.ROUTES,
        *operator.ROUTES,
        *nodes.ROUTES,  # /hangar/nodes/: the cluster's nodes (docs/cluster.md)
        *splits.ROUTES,  # /hangar/endpoints/.../split: Hangar's traffic split
        *credentials.ROUTES,
        *identity_control.ROUTES,
        *identity_data.ROUTES,
        *registry.ROUTES,  # /v2/... (OCI distribution) before S3, which would take "v2" for a bucket
        *ecr.ROUTES,  # POST / with X-Amz-Target
        *artifacts.ROUTES,  # last: its S3 path-style routes match almost any path
    ]


class Gateway:
    """Pure ASGI: Starlette's router matches decoded paths, which breaks ARN segments, so we route here."""

    def __init__(self, services: Services, routes: list[Route]) -> None:
        self.services = services
        self.table = RouteTable(routes)
        self.state = _State(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.services.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.services.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = str(uuid.uuid4())
        request.state.request_id = request_id
        try:
            response = await self._dispatch(request, raw_path(scope))
        except HangarError as exc:
            response = error_response(exc, request_id)
        except Exception as exc:
            response = unexpected_error_response(exc, request_id)
        response.headers.setdefault("x-amzn-RequestId", request_id)
        await response(scope, receive, send)

    async def _dispatch(self, request: Request, path: str) -> Response:
        found, path_known = self.table.resolve(request.method, path)
        if found is None:
            if path_known:
                raise ValidationError(f"Method {request.method} is not allowed on {path}", reason="CannotParse")
            raise NotFoundError(f"No operation matches {request.method} {path}")
        if found.route.auth == "sigv4":
            body = await read_capped_body(request, MAX_SIGNED_BODY)
            request.state.principal = await authn.authenticate_sigv4(
                request, self.services, hashlib.sha256(body).hexdigest()
            )
        # An HTTP method's routes hold HttpHandlers; only WEBSOCKET routes hold the other kind.
        return await cast(HttpHandler, found.route.handler)(request, found.params)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        found, _ = self.table.resolve("WEBSOCKET", raw_path(scope))
        if found is None:
            await websocket.close(code=4404, reason="no such websocket route")
            return
        try:
            await cast(WebSocketHandler, found.route.handler)(websocket, found.params)
        except Exception:
            log.exception("websocket handler failed")
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=1011)


class _State:
    """What handlers reach through ``request.app.state``."""

    def __init__(self, services: Services) -> None:
        self.services = services


def raw_path(scope: Scope) -> str:
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1").split("?", 1)[0]
    path: str = scope["path"]
    return path


async def read_capped_body(request: Request, limit: int) -> bytes:
    """Read the whole body, refusing more than ``limit`` bytes (checked while reading, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValidationError(f"Request body exceeds {limit} bytes", reason="CannotParse")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ValidationError(f"Request body exceeds {limit} bytes", reason="CannotParse")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # later request.body()/json() calls reuse it
    return body


def create_app(settings: Settings | None = None, services: Services | None = None) -> Gateway:
    """Build the whole server as one ASGI app (used by ``hangar serve`` and by in-process tests)."""
    if services is None:
        services = build_services(settings or Settings())
    return Gateway(services, collect_routes())
