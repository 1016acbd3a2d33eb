"""``GET /healthz``: liveness plus the facts a client needs to talk to this installation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar import __version__
from hangar.gateway.routing import Route
from hangar.sandbox.selection import NO_ISOLATION_WARNING
from hangar.services import Services


async def healthz(request: Request, _params: dict[str, str]) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    body: dict[str, object] = {
        "status": "ok",
        "version": __version__,
        "region": settings.region,
        "accountId": settings.account_id,
    }
    backend = services.sessions.describe_backend()
    body["sandbox"] = backend
    # Say it where monitoring looks, not only in the start-up log: sessions here are not isolated.
    body["isolation"] = bool(backend.get("isolates"))
    if not body["isolation"]:
        body["warning"] = NO_ISOLATION_WARNING
    return JSONResponse(body)


ROUTES = [Route("GET", "/healthz", healthz, name="Healthz", auth="none")]
