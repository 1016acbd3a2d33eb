"""``ControlPlane``: the one object the gateway and the data plane talk to.

``execute(command)`` runs the use case for a command from ``commands.py`` off the event loop and returns the
AWS-shaped answer; ``resolve_target`` is the data plane's seam; ``start``/``stop`` run the background worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hangar.control import commands as c
from hangar.control import endpoints, resource_policies, runtimes, tags
from hangar.control.context import Context
from hangar.control.resolve import TargetResolver
from hangar.control.worker import Prepare, Worker
from hangar.domain.errors import HangarError
from hangar.domain.invocation import InvocationTarget
from hangar.domain.runtime import Status
from hangar.store import endpoints as endpoint_rows
from hangar.store import runtimes as runtime_rows

_USE_CASES: dict[type, Callable[[Context, Any], dict[str, Any]]] = {
    c.CreateRuntime: runtimes.create_runtime,
    c.UpdateRuntime: runtimes.update_runtime,
    c.DeleteRuntime: runtimes.delete_runtime,
    c.GetRuntime: runtimes.get_runtime,
    c.ListRuntimes: runtimes.list_runtimes,
    c.ListRuntimeVersions: runtimes.list_versions,
    c.CreateEndpoint: endpoints.create_endpoint,
    c.GetEndpoint: endpoints.get_endpoint,
    c.UpdateEndpoint: endpoints.update_endpoint,
    c.DeleteEndpoint: endpoints.delete_endpoint,
    c.ListEndpoints: endpoints.list_endpoints,
    c.TagResource: tags.tag_resource,
    c.UntagResource: tags.untag_resource,
    c.ListTags: tags.list_tags,
    **resource_policies.USE_CASES,
}


class ControlPlane:
    def __init__(self, ctx: Context, prepare: Prepare) -> None:
        self.ctx = ctx
        self.resolver = TargetResolver(ctx)
        self.worker = Worker(ctx, prepare)
        self.policies = resource_policies.ResourcePolicies(ctx)  # who may call a runtime from a session
        ctx.after_write = self._after_write

    def _after_write(self) -> None:
        self.resolver.invalidate()
        self.worker.wake()

    async def start(self) -> None:
        """Start the worker; its first sweep resumes whatever a crash left CREATING, UPDATING or DELETING."""
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    async def execute(self, command: Any) -> dict[str, Any]:
        use_case = _USE_CASES[type(command)]
        return await asyncio.to_thread(use_case, self.ctx, command)

    def resolve_target(
        self, runtime_ref: str, qualifier: str | None, account_id: str | None, session_id: str | None = None
    ) -> InvocationTarget:
        """The READY version behind ``qualifier`` (default DEFAULT) of a runtime named by ARN or by id; under a
        traffic split (control/splits.py), the version ``session_id`` maps to."""
        return self.resolver.resolve(runtime_ref, qualifier, account_id, session_id)

    def served_targets(self) -> list[InvocationTarget]:
        """Every (runtime, version) an endpoint serves now, as the data plane would resolve it (blocking)."""
        live = set(Status) - {Status.DELETING}
        served = self.ctx.store.read(lambda conn: endpoint_rows.endpoints_in(conn, live))
        targets: dict[tuple[str, str], InvocationTarget] = {}
        for endpoint in served:
            if endpoint.live_version is None:
                continue
            try:
                target = self.resolve_target(endpoint.runtime_id, endpoint.name, self.ctx.place.account_id)
            except HangarError:  # deleted or changed since the read: the next pass sees it
                continue
            targets.setdefault((target.runtime_id, target.version), target)
        return list(targets.values())

    def jwt_authorizer_of(self, runtime_id: str) -> dict[str, Any] | None:
        """The ``customJWTAuthorizer`` invocations of this runtime check: the one its DEFAULT endpoint serves, else
        its newest version's (not served yet), else none (also for an unknown runtime). Blocking (reads the store)."""
        try:
            return self.resolve_target(runtime_id, None, self.ctx.place.account_id).jwt_authorizer
        except HangarError:
            pass
        try:
            version = self.ctx.store.read(lambda conn: runtime_rows.newest_version(conn, runtime_id))
        except HangarError:
            return None
        if version is None:
            return None
        authorizer: dict[str, Any] | None = (version.spec.authorizer or {}).get("customJWTAuthorizer")
        return authorizer
