"""Wire the session manager (and its sandbox backend) into ``Services``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hangar.domain.errors import HangarError
from hangar.domain.invocation import InvocationTarget
from hangar.services import Services

if TYPE_CHECKING:
    from hangar.control.service import ControlPlane


def wire(services: Services) -> None:
    from hangar.sandbox import select_backend
    from hangar.sessions.manager import SessionManager

    settings = services.settings
    manager = SessionManager(settings, select_backend(settings), metrics=services.metrics)
    if services.metrics is not None:
        services.metrics.watch_sessions(manager)
    control = services.control
    if control is not None:

        async def served() -> list[InvocationTarget]:
            return await asyncio.to_thread(_served_versions, control)

        if settings.warm_pool_size > 0 or any(settings.warm_pool_runtimes.values()):
            manager.pool.served = served  # the pool follows what endpoints serve; with size 0 nothing polls
        manager.templates.served = served  # templates start as soon as a version is served
    services.sessions = manager


def _served_versions(control: ControlPlane) -> list[InvocationTarget]:
    """Every (runtime, version) an endpoint serves now, as the data plane would resolve it."""
    from hangar.domain.runtime import Status
    from hangar.store import endpoints as endpoint_rows

    live = set(Status) - {Status.DELETING}
    endpoints = control.ctx.store.read(lambda conn: endpoint_rows.endpoints_in(conn, live))
    targets: dict[tuple[str, str], InvocationTarget] = {}
    for endpoint in endpoints:
        if endpoint.live_version is None:
            continue
        try:
            target = control.resolve_target(endpoint.runtime_id, endpoint.name, control.ctx.place.account_id)
        except HangarError:  # deleted or changed since the read: the next pass sees it
            continue
        targets.setdefault((target.runtime_id, target.version), target)
    return list(targets.values())
