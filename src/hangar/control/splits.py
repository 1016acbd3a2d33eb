"""Use cases of Hangar's traffic split (domain/split.py): set, show and clear the split of an endpoint.

Hangar-only, so not in ``service._USE_CASES`` (no AWS command shape): the operator API (gateway/splits.py) calls
these through ``asyncio.to_thread``. Every write drops the resolver's cache (``ctx.after_write``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from hangar.control.context import Context
from hangar.control.endpoints import require_endpoint
from hangar.control.runtimes import require_runtime
from hangar.domain.errors import ConflictError, ValidationError
from hangar.domain.runtime import FAILED, Status
from hangar.domain.split import Split, parse_routes
from hangar.store import runtimes as runtime_rows
from hangar.store import splits as rows


def put_split(ctx: Context, runtime_id: str, endpoint_name: str, routes: object) -> dict[str, Any]:
    """Route new sessions of the endpoint to two versions by weight; both versions must exist and not have failed."""
    weights = parse_routes(routes)

    def write(conn: Connection) -> dict[str, Any]:
        runtime = require_runtime(conn, runtime_id, for_update=True)
        if runtime.status == Status.DELETING:
            raise ConflictError(f"Agent runtime {runtime_id} is being deleted")
        endpoint = require_endpoint(conn, runtime_id, endpoint_name)
        if endpoint.live_version is None or endpoint.status == Status.DELETING:
            raise ConflictError(f"Endpoint {endpoint_name} of agent runtime {runtime_id} serves no version")
        for number, _ in weights:
            version = runtime_rows.get_version(conn, runtime_id, number)
            if version is None or version.status == Status.DELETING:
                raise ValidationError(f"Agent runtime {runtime_id} has no version {number}")
            if version.status in FAILED:
                raise ValidationError(f"Version {number} of agent runtime {runtime_id} is {version.status.value}")
        split = Split(base_version=endpoint.live_version, weights=weights)
        rows.put_split(conn, runtime_id, endpoint_name, split)
        return _document(runtime_id, endpoint_name, split)

    answer = ctx.store.write(write)
    ctx.after_write()
    return answer


def get_split(ctx: Context, runtime_id: str, endpoint_name: str) -> dict[str, Any]:
    """The endpoint's split (``routes`` empty when it has none, or when the endpoint moved since it was set)."""

    def read(conn: Connection) -> dict[str, Any]:
        require_runtime(conn, runtime_id)
        endpoint = require_endpoint(conn, runtime_id, endpoint_name)
        split = rows.get_split(conn, runtime_id, endpoint_name)
        if split is not None and split.base_version != endpoint.live_version:
            split = None
        return _document(runtime_id, endpoint_name, split)

    return ctx.store.read(read)


def delete_split(ctx: Context, runtime_id: str, endpoint_name: str) -> dict[str, Any]:
    """Every new session goes to the endpoint's live version again."""

    def write(conn: Connection) -> dict[str, Any]:
        require_runtime(conn, runtime_id)
        require_endpoint(conn, runtime_id, endpoint_name)
        rows.delete_split(conn, runtime_id, endpoint_name)
        return _document(runtime_id, endpoint_name, None)

    answer = ctx.store.write(write)
    ctx.after_write()
    return answer


def _document(runtime_id: str, endpoint_name: str, split: Split | None) -> dict[str, Any]:
    return {
        "agentRuntimeId": runtime_id,
        "endpointName": endpoint_name,
        "routes": split.describe() if split else [],
        "baseVersion": str(split.base_version) if split else None,
    }
