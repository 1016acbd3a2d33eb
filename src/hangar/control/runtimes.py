"""Use cases on runtimes and their versions: create, update, delete, get, list."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from hangar.control import views
from hangar.control.commands import (
    CreateRuntime,
    DeleteRuntime,
    GetRuntime,
    ListRuntimes,
    ListRuntimeVersions,
    UpdateRuntime,
)
from hangar.control.context import Context, idempotent_write
from hangar.domain.endpoint import Endpoint
from hangar.domain.errors import ConflictError, NotFoundError, ServiceQuotaExceededError
from hangar.domain.names import DEFAULT_ENDPOINT, MAX_VERSION, new_endpoint_id, new_runtime_id
from hangar.domain.pagination import decode_token, encode_token
from hangar.domain.runtime import IN_PROGRESS, Runtime, RuntimeSpec, Status, Version
from hangar.domain.validation import Checker
from hangar.store import endpoints as endpoint_rows
from hangar.store import identity as identity_rows
from hangar.store import runtimes as rows
from hangar.store import tags as tag_rows
from hangar.store.transactions import utcnow


def require_runtime(conn: Connection, runtime_id: str, *, for_update: bool = False) -> Runtime:
    runtime = rows.get_runtime(conn, runtime_id, for_update=for_update)
    if runtime is None:
        raise NotFoundError(f"No agent runtime with id {runtime_id}")
    return runtime


def require_version(conn: Connection, runtime_id: str, number: int) -> Version:
    version = rows.get_version(conn, runtime_id, number)
    if version is None or version.status == Status.DELETING:
        raise NotFoundError(f"Agent runtime {runtime_id} has no version {number}")
    return version


def create_runtime(ctx: Context, command: CreateRuntime) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        if rows.name_taken(conn, command.name):
            raise ConflictError(f"An agent runtime named {command.name} already exists")
        now = utcnow()
        runtime = Runtime(new_runtime_id(command.name), command.name, Status.CREATING, 1, now, now)
        rows.insert_runtime(conn, runtime)
        rows.insert_version(conn, Version(runtime.runtime_id, 1, command.spec, Status.CREATING, now, now))
        endpoint_rows.insert_endpoint(
            conn,
            Endpoint(
                runtime.runtime_id,
                DEFAULT_ENDPOINT,
                new_endpoint_id(DEFAULT_ENDPOINT),
                Status.CREATING,
                now,
                now,
                target_version=1,
            ),
        )
        tag_rows.put_tags(conn, runtime.runtime_id, None, command.tags)
        # the runtime's workload identity, named by its id; the row goes with the runtime (ON DELETE CASCADE)
        identity_rows.insert_workload(
            conn, identity_rows.WorkloadRow(runtime.runtime_id, (), runtime.runtime_id, now, now)
        )
        return {
            "agentRuntimeArn": ctx.place.runtime_arn(runtime.runtime_id),
            "agentRuntimeId": runtime.runtime_id,
            "agentRuntimeVersion": "1",
            "createdAt": views.iso(now),
            "status": Status.CREATING.value,
            "workloadIdentityDetails": views.workload_identity(ctx.place, runtime.runtime_id),
            **views.template_arn(command.spec),
        }

    return idempotent_write(ctx, "CreateAgentRuntime", command, write)


def update_runtime(ctx: Context, command: UpdateRuntime) -> dict[str, Any]:
    """A new immutable version; DEFAULT starts moving to it, named endpoints stay where they are."""

    def write(conn: Connection) -> dict[str, Any]:
        runtime = require_runtime(conn, command.runtime_id, for_update=True)
        if runtime.status in IN_PROGRESS or runtime.status == Status.DELETING:
            raise ConflictError(f"Agent runtime {runtime.runtime_id} is {runtime.status.value}; retry once it settles")
        number = runtime.latest_version + 1
        if number > MAX_VERSION:
            raise ServiceQuotaExceededError(f"Agent runtime {runtime.runtime_id} has used all {MAX_VERSION} versions")
        now = utcnow()
        spec = _carried_forward(command.spec, rows.newest_version(conn, runtime.runtime_id))
        rows.insert_version(conn, Version(runtime.runtime_id, number, spec, Status.UPDATING, now, now))
        rows.save_runtime(
            conn, replace(runtime, status=Status.UPDATING, latest_version=number, updated_at=now, failure_reason=None)
        )
        default = endpoint_rows.get_endpoint(conn, runtime.runtime_id, DEFAULT_ENDPOINT)
        if default is not None:
            moving = replace(
                default, status=Status.UPDATING, target_version=number, updated_at=now, failure_reason=None
            )
            endpoint_rows.save_endpoint(conn, moving)
        return {
            "agentRuntimeArn": ctx.place.runtime_arn(runtime.runtime_id),
            "agentRuntimeId": runtime.runtime_id,
            "agentRuntimeVersion": str(number),
            "createdAt": views.iso(runtime.created_at),
            "lastUpdatedAt": views.iso(now),
            "status": Status.UPDATING.value,
            "workloadIdentityDetails": views.workload_identity(ctx.place, runtime.runtime_id),
            **views.template_arn(spec),
        }

    return idempotent_write(ctx, "UpdateAgentRuntime", command, write)


def _carried_forward(spec: RuntimeSpec, previous: Version | None) -> RuntimeSpec:
    """What an update leaves out but the runtime keeps: its CPU architecture (immutable after creation) and its
    workload identity template (replaceable only on a runtime created with one)."""
    before = previous.spec.extras if previous is not None else {}
    extras = dict(spec.extras)
    check = Checker()
    for name in ("cpuConfigurations", "workloadIdentityTemplateArn"):
        if name not in extras and name in before:
            extras[name] = before[name]
    if before.get("cpuConfigurations", extras.get("cpuConfigurations")) != extras.get("cpuConfigurations"):
        check.fail("cpuConfigurations", "Member is immutable after creation", extras.get("cpuConfigurations"))
    if "workloadIdentityTemplateArn" in extras and "workloadIdentityTemplateArn" not in before:
        check.fail(
            "workloadIdentityTemplateArn",
            "A runtime created without a workload identity template cannot have one added",
            extras["workloadIdentityTemplateArn"],
        )
    check.raise_if_any()
    return replace(spec, extras=extras)


def delete_runtime(ctx: Context, command: DeleteRuntime) -> dict[str, Any]:
    """The whole runtime (with its endpoints and tags), or with ``version`` one version no endpoint serves."""

    def write(conn: Connection) -> dict[str, Any]:
        runtime = require_runtime(conn, command.runtime_id, for_update=True)
        now = utcnow()
        if command.version is not None:
            return _delete_version(conn, runtime, command.version, now)
        if runtime.status != Status.DELETING:
            rows.save_runtime(conn, replace(runtime, status=Status.DELETING, updated_at=now, failure_reason=None))
            for endpoint in endpoint_rows.endpoints_of(conn, runtime.runtime_id):
                endpoint_rows.save_endpoint(conn, replace(endpoint, status=Status.DELETING, updated_at=now))
        return {"status": Status.DELETING.value, "agentRuntimeId": runtime.runtime_id}

    return idempotent_write(ctx, "DeleteAgentRuntime", command, write)


def _delete_version(conn: Connection, runtime: Runtime, number: int, now: datetime) -> dict[str, Any]:
    if runtime.status == Status.DELETING:
        raise ConflictError(f"Agent runtime {runtime.runtime_id} is being deleted")
    version = require_version(conn, runtime.runtime_id, number)
    users = [e.name for e in endpoint_rows.endpoints_of(conn, runtime.runtime_id) if e.references(number)]
    if users:
        raise ConflictError(
            f"Version {number} of agent runtime {runtime.runtime_id} is used by endpoint(s) {', '.join(users)};"
            " point them at another version first"
        )
    if version.status in IN_PROGRESS:
        raise ConflictError(f"Version {number} is {version.status.value}; retry once it settles")
    newest = rows.newest_version(conn, runtime.runtime_id)
    rows.save_version(conn, replace(version, status=Status.DELETING, updated_at=now))
    remaining = rows.newest_version(conn, runtime.runtime_id)
    if remaining is None:
        raise ConflictError(f"Version {number} is the last version of {runtime.runtime_id}; delete the runtime instead")
    if newest is not None and newest.number == number:
        # the runtime now shows its next newest version, so it takes that version's status too
        shown = replace(runtime, status=remaining.status, updated_at=now, failure_reason=remaining.failure_reason)
        rows.save_runtime(conn, shown)
    return {"status": Status.DELETING.value, "agentRuntimeId": runtime.runtime_id, "agentRuntimeVersion": str(number)}


def get_runtime(ctx: Context, command: GetRuntime) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        runtime = require_runtime(conn, command.runtime_id)
        if command.version is not None:
            version = require_version(conn, runtime.runtime_id, command.version)
        else:
            newest = rows.newest_version(conn, runtime.runtime_id)
            if newest is None:
                raise NotFoundError(f"No agent runtime with id {command.runtime_id}")
            version = newest
        return views.runtime_detail(ctx.place, runtime, version, of_version=command.version is not None)

    return ctx.store.read(read)


def list_runtimes(ctx: Context, command: ListRuntimes) -> dict[str, Any]:
    scope = "runtimes"

    def read(conn: Connection) -> dict[str, Any]:
        after = decode_token(ctx.token_secret, scope, command.next_token) if command.next_token else None
        page = rows.list_runtimes(conn, after=after, limit=command.max_results + 1)
        more = len(page) > command.max_results
        page = page[: command.max_results]
        newest = rows.newest_versions(conn, [r.runtime_id for r in page])
        items = [views.runtime_summary(ctx.place, r, newest.get(r.runtime_id)) for r in page]
        document: dict[str, Any] = {"agentRuntimes": items}
        if more:
            document["nextToken"] = encode_token(ctx.token_secret, scope, page[-1].runtime_id)
        return document

    return ctx.store.read(read)


def list_versions(ctx: Context, command: ListRuntimeVersions) -> dict[str, Any]:
    scope = f"versions:{command.runtime_id}"

    def read(conn: Connection) -> dict[str, Any]:
        runtime = require_runtime(conn, command.runtime_id)
        after = int(decode_token(ctx.token_secret, scope, command.next_token)) if command.next_token else None
        page = rows.list_versions(conn, runtime.runtime_id, after=after, limit=command.max_results + 1)
        more = len(page) > command.max_results
        page = page[: command.max_results]
        document: dict[str, Any] = {"agentRuntimes": [views.version_summary(ctx.place, runtime, v) for v in page]}
        if more:
            document["nextToken"] = encode_token(ctx.token_secret, scope, str(page[-1].number))
        return document

    return ctx.store.read(read)
