"""The background loop that ends sessions: idle timeout, max lifetime, agent exited.

Idle is judged from the session's own activity clock (requests in flight keep it Active). Only when that clock
says "idle for idle_timeout" is the agent's ``/ping`` asked, so idle agents are not polled all the time. A
``HealthyBusy`` answer keeps the session (AgentCore honours it only when ``time_of_last_update`` is present) and
the agent is then re-asked every few seconds until it is ``Healthy`` again, when the idle clock restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from hangar.sessions.probe import ping
from hangar.sessions.session import Session

if TYPE_CHECKING:
    from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar.sessions")

BUSY_POLL_S = 5.0
MAX_TICK_S = 1.0
MIN_TICK_S = 0.05


class Lifecycle:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hangar-session-lifecycle")

    def wake(self) -> None:
        """A session started: re-plan the next tick (its timeouts may be shorter than the current tick)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is None:
            return
        # Python 3.11's wait_for can swallow a cancel that lands as its wait completes: the flag ends the loop anyway.
        self._stopped = True
        self._wake.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopped:
            try:
                await self.sweep()
            except Exception:
                log.exception("session lifecycle sweep failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick())

    def _tick(self) -> float:
        sessions = self.manager.live_sessions()
        if not sessions:
            return MAX_TICK_S
        shortest = min(min(s.idle_timeout_s, s.max_lifetime_s) for s in sessions)
        return max(MIN_TICK_S, min(MAX_TICK_S, shortest / 4))

    async def sweep(self) -> None:
        """One pass over every live session; ends the ones whose time is up."""
        now = time.time()
        self.manager.expire_spares(now)
        ending: list[tuple[Session, str]] = []
        to_ping: list[Session] = []
        for session in self.manager.live_sessions():
            if not session.sandbox.alive():
                ending.append((session, "agent exited"))
            elif now >= session.expires_at:
                ending.append((session, "max lifetime reached"))
            elif session.inflight:
                continue
            elif _ping_due(session, now):
                to_ping.append(session)
        answers = await asyncio.gather(*(ping(s.client) for s in to_ping))
        for session, answer in zip(to_ping, answers, strict=True):
            if session.ended_at is not None or session.inflight:
                continue
            now = time.time()
            if answer is not None and answer.status == "HealthyBusy" and answer.time_of_last_update is not None:
                session.busy = True
                session.last_activity = now
                session.next_ping_at = now + min(session.idle_timeout_s, BUSY_POLL_S)
                continue
            was_busy, session.busy = session.busy, False
            if was_busy and answer is not None and answer.time_of_last_update is not None:
                # Busy ended at time_of_last_update: the idle clock starts there.
                session.last_activity = max(session.last_activity, min(answer.time_of_last_update, now))
            if now - session.last_activity >= session.idle_timeout_s:
                ending.append((session, "idle timeout"))
        if ending:
            await asyncio.gather(*(self.manager.end(s, reason) for s, reason in ending))


def _ping_due(session: Session, now: float) -> bool:
    if session.busy:
        return now >= session.next_ping_at
    return now - session.last_activity >= session.idle_timeout_s
