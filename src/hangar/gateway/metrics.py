"""``GET /metrics``: the server's Prometheus metrics, public like ``/healthz``.

Nothing in it names a runtime, version or session (``observability/metrics.py`` keeps labels to fixed values), so
an unauthenticated scrape learns load and start-up behaviour, not what is deployed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hangar.gateway.routing import Route


async def metrics(request: Request, _params: dict[str, str]) -> Response:
    registry = request.app.state.services.metrics
    body, content_type = registry.render(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


ROUTES = [Route("GET", "/metrics", metrics, name="Metrics", auth="none")]
