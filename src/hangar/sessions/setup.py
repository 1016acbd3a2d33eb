"""Build the session manager on the sandbox backend the settings choose."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hangar.config import Settings
from hangar.domain.invocation import InvocationTarget
from hangar.observability.metrics import Metrics
from hangar.sandbox import select_backend
from hangar.sessions.manager import SessionManager


def build_sessions(
    settings: Settings, metrics: Metrics, served_versions: Callable[[], list[InvocationTarget]]
) -> SessionManager:
    """The manager; its warm pool and templates follow ``served_versions`` (blocking: what endpoints serve now)."""
    manager = SessionManager(settings, select_backend(settings), metrics=metrics)
    metrics.watch_sessions(manager)

    async def served() -> list[InvocationTarget]:
        return await asyncio.to_thread(served_versions)

    floors = settings.warm_pool_size > 0 or any(settings.warm_pool_runtimes.values())
    if floors or manager.pool.cold_spares or manager.pool.sizer is not None:
        manager.pool.served = served  # the pool follows what endpoints serve; with size 0 nothing polls
    manager.templates.served = served  # templates start as soon as a version is served
    return manager
