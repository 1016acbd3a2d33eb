"""Warm pool: sandboxes already started and answering ``/ping``, kept per (runtime, version) for new sessions.

With ``warm_pool_size`` N > 0, the first session of a version starts cold; from then on N spare sandboxes of that
version are kept ready, and a new session takes one instead of waiting for a start (the pool refills in the
background). A sandbox knows nothing about its session until a request names it, so any spare fits any session.
Spares of a version nobody asks for end after that version's idle timeout, so versions an endpoint has left drain
away on their own. Spares do not count as sessions, but the pool never grows past ``max_sessions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import Sandbox
from hangar.sessions.agent_http import AgentHttp

log = logging.getLogger("hangar.sessions")


@dataclass
class Spare:
    target: InvocationTarget
    sandbox: Sandbox
    client: AgentHttp
    expires_at: float = field(default=0.0)


Launch = Callable[[InvocationTarget], Awaitable[tuple[Sandbox, AgentHttp]]]
PoolKey = tuple[str, str]  # (runtime id, version)


class WarmPool:
    def __init__(self, size: int, launch: Launch, has_room: Callable[[], bool], idle_scale: float) -> None:
        self.size = size
        self._launch = launch
        self._has_room = has_room
        self._idle_scale = idle_scale
        self._spares: dict[PoolKey, list[Spare]] = {}
        self._filling: dict[PoolKey, asyncio.Task[None]] = {}

    def count(self) -> int:
        return sum(len(spares) for spares in self._spares.values())

    def take(self, target: InvocationTarget) -> tuple[Spare | None, list[Spare]]:
        """A live spare of the target's version (or None), and dead spares found on the way (to be stopped)."""
        spares = self._spares.get((target.runtime_id, target.version), [])
        dead: list[Spare] = []
        while spares:
            spare = spares.pop()
            if spare.sandbox.alive():
                return spare, dead
            dead.append(spare)
        return None, dead

    def want(self, target: InvocationTarget) -> None:
        """Refill the target's version up to ``size`` in the background (one fill per version at a time)."""
        key = (target.runtime_id, target.version)
        if self.size <= 0 or key in self._filling:
            return
        task = asyncio.create_task(self._fill(key, target), name=f"warm-pool-{target.runtime_id}-v{target.version}")
        self._filling[key] = task
        task.add_done_callback(lambda _: self._filling.pop(key, None))

    async def _fill(self, key: PoolKey, target: InvocationTarget) -> None:
        while len(self._spares.get(key, [])) < self.size and self._has_room():
            try:
                sandbox, client = await self._launch(target)
            except Exception as exc:  # a version that cannot start: sessions will report why
                log.warning("warm pool for %s v%s stopped filling: %s", target.runtime_id, target.version, exc)
                return
            expires = time.time() + target.idle_timeout_s * self._idle_scale
            self._spares.setdefault(key, []).append(Spare(target, sandbox, client, expires))

    def expired(self, now: float) -> list[Spare]:
        """Remove and return the spares nobody took within their version's idle timeout, or that died."""
        gone: list[Spare] = []
        for key, spares in list(self._spares.items()):
            keep = [s for s in spares if s.expires_at > now and s.sandbox.alive()]
            gone += [s for s in spares if s not in keep]
            if keep:
                self._spares[key] = keep
            else:
                del self._spares[key]
        return gone

    async def close(self) -> list[Spare]:
        """Stop filling; remove and return every spare (the caller stops them)."""
        for task in list(self._filling.values()):
            task.cancel()
        for task in list(self._filling.values()):
            with contextlib.suppress(BaseException):
                await task
        spares = [s for group in self._spares.values() for s in group]
        self._spares.clear()
        return spares
