"""Operator API of the nodes (``hangar nodes``), SigV4-signed like every other call.

GET  /hangar/nodes/               -> 200 {"nodes": [{"name", "address", "capacity", "sessions", "memoryBytes",
                                     "templates", "draining", "healthy"}, ...]}: in cluster mode each ``hangar node``
                                     as its Ray actor describes it; in one process, that process as node "local"
POST /hangar/nodes/{name}/drain   -> 200 {"name", "draining": true}; 404 when no such live node; 400 in one process
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.cluster.remote import ClusterSessions
from hangar.domain.errors import NotFoundError, ValidationError
from hangar.domain.names import LOCAL_NODE
from hangar.gateway.routing import Route


def _cluster(request: Request) -> ClusterSessions | None:
    sessions = request.app.state.services.sessions
    return sessions if isinstance(sessions, ClusterSessions) else None


def _local(request: Request) -> dict[str, Any]:
    services = request.app.state.services
    manager = services.sessions
    live = manager.live_sessions()
    versions = manager.templates.describe().get("versions", {})
    alive = sorted(key.replace("/", ":") for key, state in versions.items() if state.get("template") is not None)
    return {
        "name": LOCAL_NODE,
        "address": services.settings.resolved_public_url,
        "capacity": services.settings.max_sessions,
        "sessions": len(live),
        "memoryBytes": None,
        "templates": alive,
        "draining": False,
        "healthy": True,
    }


async def list_nodes(request: Request, _params: dict[str, str]) -> Response:
    cluster = _cluster(request)
    nodes = await cluster.nodes() if cluster is not None else [_local(request)]
    return JSONResponse({"nodes": nodes})


async def drain_node(request: Request, params: dict[str, str]) -> Response:
    cluster = _cluster(request)
    name = params["name"]
    if cluster is None:
        raise ValidationError("This Hangar runs in one process (no --cluster): there is no node to drain")
    if not await cluster.drain(name):
        raise NotFoundError(f"No live cluster node named {name}")
    return JSONResponse({"name": name, "draining": True})


async def cluster_sessions(request: Request) -> Response | None:
    """``GET /hangar/sessions/`` in cluster mode: every node's sessions, each with its ``node`` (None otherwise)."""
    cluster = _cluster(request)
    if cluster is None:
        return None
    return JSONResponse(
        {
            "sessions": await cluster.listing(),
            "backend": cluster.describe_backend(),
            "warmPool": {},
            "templates": {},
        }
    )


ROUTES = [
    Route("GET", "/hangar/nodes/", list_nodes, name="ListNodes"),
    Route("POST", "/hangar/nodes/{name}/drain", drain_node, name="DrainNode"),
]
