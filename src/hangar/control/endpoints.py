"""Use cases on endpoints: create (pinned to a version), move (roll forward or back), delete, get, list."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from hangar.control import views
from hangar.control.commands import CreateEndpoint, DeleteEndpoint, GetEndpoint, ListEndpoints, UpdateEndpoint
from hangar.control.context import Context, idempotent_write
from hangar.control.runtimes import require_runtime, require_version
from hangar.domain.endpoint import Endpoint
from hangar.domain.errors import ConflictError, NotFoundError, ServiceQuotaExceededError, ValidationError
from hangar.domain.names import DEFAULT_ENDPOINT, new_endpoint_id
from hangar.domain.pagination import decode_token, encode_token
from hangar.domain.runtime import FAILED, IN_PROGRESS, Runtime, Status, Version
from hangar.store import endpoints as rows
from hangar.store import runtimes as runtime_rows
from hangar.store import splits as split_rows
from hangar.store import tags as tag_rows
from hangar.store.transactions import utcnow

MAX_ENDPOINTS = 10  # per runtime, DEFAULT included (the AgentCore quota)


def require_endpoint(conn: Connection, runtime_id: str, name: str) -> Endpoint:
    endpoint = rows.get_endpoint(conn, runtime_id, name)
    if endpoint is None:
        raise NotFoundError(f"Agent runtime {runtime_id} has no endpoint named {name}")
    return endpoint


def _servable_version(conn: Connection, runtime: Runtime, number: int | None) -> Version:
    """The version an endpoint may point at: it exists and has not failed (it may still be in progress)."""
    if number is None:
        newest = runtime_rows.newest_version(conn, runtime.runtime_id)
        if newest is None:
            raise NotFoundError(f"Agent runtime {runtime.runtime_id} has no versions")
        number = newest.number
    version = require_version(conn, runtime.runtime_id, number)
    if version.status in FAILED:
        raise ValidationError(
            f"Version {number} of agent runtime {runtime.runtime_id} is {version.status.value} and cannot be served",
            reason="FieldValidationFailed",
        )
    return version


def _live_runtime(conn: Connection, runtime_id: str) -> Runtime:
    runtime = require_runtime(conn, runtime_id, for_update=True)
    if runtime.status == Status.DELETING:
        raise ConflictError(f"Agent runtime {runtime_id} is being deleted")
    return runtime


def create_endpoint(ctx: Context, command: CreateEndpoint) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        runtime = _live_runtime(conn, command.runtime_id)
        if rows.get_endpoint(conn, runtime.runtime_id, command.name) is not None:
            raise ConflictError(f"Agent runtime {runtime.runtime_id} already has an endpoint named {command.name}")
        if len(rows.endpoints_of(conn, runtime.runtime_id)) >= MAX_ENDPOINTS:
            raise ServiceQuotaExceededError(f"An agent runtime has at most {MAX_ENDPOINTS} endpoints")
        version = _servable_version(conn, runtime, command.version)
        now = utcnow()
        endpoint = Endpoint(
            runtime.runtime_id,
            command.name,
            new_endpoint_id(command.name),
            Status.CREATING,
            now,
            now,
            target_version=version.number,
            description=command.description,
        )
        rows.insert_endpoint(conn, endpoint)
        split_rows.delete_split(conn, runtime.runtime_id, command.name)  # a split a deleted namesake left behind
        tag_rows.put_tags(conn, runtime.runtime_id, command.name, command.tags)
        return {
            "targetVersion": str(version.number),
            "agentRuntimeEndpointArn": ctx.place.endpoint_arn(runtime.runtime_id, command.name),
            "agentRuntimeArn": ctx.place.runtime_arn(runtime.runtime_id),
            "agentRuntimeId": runtime.runtime_id,
            "endpointName": command.name,
            "status": Status.CREATING.value,
            "createdAt": views.iso(now),
        }

    return idempotent_write(ctx, "CreateAgentRuntimeEndpoint", command, write)


def update_endpoint(ctx: Context, command: UpdateEndpoint) -> dict[str, Any]:
    """Point a named endpoint at another version: forward, or back to an older one (rollback)."""

    def write(conn: Connection) -> dict[str, Any]:
        runtime = _live_runtime(conn, command.runtime_id)
        endpoint = require_endpoint(conn, runtime.runtime_id, command.name)
        if endpoint.name == DEFAULT_ENDPOINT:
            raise ValidationError(
                "The DEFAULT endpoint always follows the newest version; create a named endpoint to pin a version",
                reason="FieldValidationFailed",
            )
        if endpoint.status in IN_PROGRESS or endpoint.status == Status.DELETING:
            raise ConflictError(f"Endpoint {endpoint.name} is {endpoint.status.value}; retry once it settles")
        current = endpoint.live_version or endpoint.target_version
        version = _servable_version(conn, runtime, command.version if command.version is not None else current)
        now = utcnow()
        moved = replace(
            endpoint,
            status=Status.UPDATING,
            updated_at=now,
            target_version=version.number,
            description=command.description if command.description is not None else endpoint.description,
            failure_reason=None,
        )
        rows.save_endpoint(conn, moved)
        document = {
            "agentRuntimeEndpointArn": ctx.place.endpoint_arn(runtime.runtime_id, endpoint.name),
            "agentRuntimeArn": ctx.place.runtime_arn(runtime.runtime_id),
            "status": Status.UPDATING.value,
            "createdAt": views.iso(endpoint.created_at),
            "lastUpdatedAt": views.iso(now),
            "targetVersion": str(version.number),
        }
        if moved.live_version is not None:
            document["liveVersion"] = str(moved.live_version)
        return document

    return idempotent_write(ctx, "UpdateAgentRuntimeEndpoint", command, write)


def delete_endpoint(ctx: Context, command: DeleteEndpoint) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        require_runtime(conn, command.runtime_id, for_update=True)
        endpoint = require_endpoint(conn, command.runtime_id, command.name)
        if endpoint.name == DEFAULT_ENDPOINT:
            raise ConflictError("The DEFAULT endpoint cannot be deleted; it goes with its runtime")
        if endpoint.status != Status.DELETING:
            rows.save_endpoint(
                conn, replace(endpoint, status=Status.DELETING, updated_at=utcnow(), failure_reason=None)
            )
        return {"status": Status.DELETING.value, "agentRuntimeId": command.runtime_id, "endpointName": command.name}

    return idempotent_write(ctx, "DeleteAgentRuntimeEndpoint", command, write)


def get_endpoint(ctx: Context, command: GetEndpoint) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        require_runtime(conn, command.runtime_id)
        return views.endpoint_detail(ctx.place, require_endpoint(conn, command.runtime_id, command.name))

    return ctx.store.read(read)


def list_endpoints(ctx: Context, command: ListEndpoints) -> dict[str, Any]:
    scope = f"endpoints:{command.runtime_id}"

    def read(conn: Connection) -> dict[str, Any]:
        require_runtime(conn, command.runtime_id)
        after = decode_token(ctx.token_secret, scope, command.next_token) if command.next_token else None
        page = rows.endpoints_of(conn, command.runtime_id, after=after, limit=command.max_results + 1)
        more = len(page) > command.max_results
        page = page[: command.max_results]
        document: dict[str, Any] = {"runtimeEndpoints": [views.endpoint_detail(ctx.place, e) for e in page]}
        if more:
            document["nextToken"] = encode_token(ctx.token_secret, scope, page[-1].name)
        return document

    return ctx.store.read(read)
