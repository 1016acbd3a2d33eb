"""PutResourcePolicy, GetResourcePolicy, DeleteResourcePolicy on runtime and endpoint ARNs, and the check a
session's call to another runtime must pass (``ResourcePolicies.authorize``).

A session calls as its runtime's execution role (``roleArn``) and as its workload identity. An explicit Deny in
the runtime's or the endpoint's policy wins; otherwise one of them must Allow; no policy at all denies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from hangar.control.context import Context
from hangar.domain.arns import ResourceRef, parse_resource_arn
from hangar.domain.errors import AccessDeniedError, NotFoundError, ValidationError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.resource_policy import Caller, parse_policy
from hangar.domain.runtime import Status
from hangar.store import endpoints as endpoint_rows
from hangar.store import resource_policies as rows
from hangar.store import runtimes as runtime_rows
from hangar.store.transactions import utcnow


@dataclass(frozen=True)
class PutResourcePolicy:
    resource_arn: str
    policy: str


@dataclass(frozen=True)
class GetResourcePolicy:
    resource_arn: str


@dataclass(frozen=True)
class DeleteResourcePolicy:
    resource_arn: str


def _arn(value: str) -> str:
    if not 20 <= len(value) <= 1011:
        raise ValidationError(f"resourceArn must be 20 to 1011 characters long (got {len(value)})")
    return value


def parse_put(resource_arn: str, body: dict[str, Any]) -> PutResourcePolicy:
    policy = body.get("policy")
    if not isinstance(policy, str):
        raise ValidationError("policy is required and must be a string (the policy document as JSON text)")
    return PutResourcePolicy(_arn(resource_arn), policy)


def parse_get(resource_arn: str) -> GetResourcePolicy:
    return GetResourcePolicy(_arn(resource_arn))


def parse_delete(resource_arn: str) -> DeleteResourcePolicy:
    return DeleteResourcePolicy(_arn(resource_arn))


def _resource(ctx: Context, conn: Connection, arn: str) -> ResourceRef:
    """The runtime or endpoint an ARN names; NotFound when it is not one of ours or does not exist."""
    ref = parse_resource_arn(arn)
    if ref is None or ref.account_id != ctx.place.account_id or ref.region != ctx.place.region:
        raise NotFoundError(f"No agent runtime or endpoint {arn}")
    runtime = runtime_rows.get_runtime(conn, ref.runtime_id)
    if runtime is None or runtime.status == Status.DELETING:
        raise NotFoundError(f"No agent runtime or endpoint {arn}")
    if ref.endpoint_name is not None:
        endpoint = endpoint_rows.get_endpoint(conn, ref.runtime_id, ref.endpoint_name)
        if endpoint is None or endpoint.status == Status.DELETING:
            raise NotFoundError(f"No agent runtime or endpoint {arn}")
    return ref


def put_resource_policy(ctx: Context, command: PutResourcePolicy) -> dict[str, Any]:
    parse_policy(command.policy, command.resource_arn)  # refused before anything is looked up or written

    def write(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn)
        rows.put_policy(conn, ref.runtime_id, ref.endpoint_name, command.policy, utcnow())
        return {"policy": command.policy}

    return ctx.store.write(write)


def get_resource_policy(ctx: Context, command: GetResourcePolicy) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn)
        policy = rows.get_policy(conn, ref.runtime_id, ref.endpoint_name)
        if policy is None:
            raise NotFoundError(f"No resource policy is attached to {command.resource_arn}")
        return {"policy": policy}

    return ctx.store.read(read)


def delete_resource_policy(ctx: Context, command: DeleteResourcePolicy) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn)
        if not rows.delete_policy(conn, ref.runtime_id, ref.endpoint_name):
            raise NotFoundError(f"No resource policy is attached to {command.resource_arn}")
        return {}

    return ctx.store.write(write)


USE_CASES: dict[type, Callable[[Context, Any], dict[str, Any]]] = {
    PutResourcePolicy: put_resource_policy,
    GetResourcePolicy: get_resource_policy,
    DeleteResourcePolicy: delete_resource_policy,
}


class ResourcePolicies:
    """Decides whether a session (of runtime ``caller_runtime``, version ``caller_version``) may act on a target."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def authorize(self, caller_runtime: str, caller_version: str, target: InvocationTarget, action: str) -> None:
        """Return when allowed; AccessDeniedException (AWS's wording) otherwise. Reads the store off the loop."""
        await asyncio.to_thread(self._authorize, caller_runtime, caller_version, target, action)

    def _authorize(self, caller_runtime: str, caller_version: str, target: InvocationTarget, action: str) -> None:
        place = self.ctx.place
        endpoint_arn = place.endpoint_arn(target.runtime_id, target.endpoint_name)

        def read(conn: Connection) -> tuple[str | None, dict[str, str]]:
            version = runtime_rows.get_version(conn, caller_runtime, int(caller_version))
            role = version.spec.role_arn if version is not None else None
            return role, rows.policies_of(conn, target.runtime_id, target.endpoint_name)

        role, policies = self.ctx.store.read(read)
        arns = {place.workload_identity_arn(caller_runtime)} | ({role} if role else set())
        caller = Caller(place.account_id, frozenset(arns))
        decisions = set()
        for endpoint_name, text in policies.items():
            policy = parse_policy(text, endpoint_arn if endpoint_name else target.runtime_arn)
            decisions.add(policy.decide(caller, action))
        who = role or place.workload_identity_arn(caller_runtime)
        denied = f"User: {who} is not authorized to perform: {action} on resource: {target.runtime_arn}"
        if "Deny" in decisions:
            raise AccessDeniedError(f"{denied} with an explicit deny in a resource-based policy")
        if "Allow" not in decisions:
            raise AccessDeniedError(f"{denied} because no resource-based policy allows the {action} action")
