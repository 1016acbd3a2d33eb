"""The background loop that ends sessions: idle timeout, max lifetime, agent exited.

Idle is judged from the session's own activity clock (requests in flight keep it Active). Only when that clock
says "idle for idle_timeout" is the agent's ``/ping`` asked, so idle agents are not polled all the time. A
``HealthyBusy`` answer keeps the session (AgentCore honours it only when ``time_of_last_update`` is present) and
the agent is then re-asked every few seconds until it is ``Healthy`` again, when the idle clock restarts.

The loop's work is proportional to what changes, not to how many sessions live: each session is looked at when its
next deadline comes (the end of its idle time as last seen, its max lifetime, its next busy ping), kept in a heap;
activity since only moves the deadline, found out at that look. An agent's exit is noticed through a pidfd of the
sandbox's first process (``Sandbox.exit_pid``) on the event loop; a sandbox without one is asked ``alive()`` on
every pass, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING

from hangar.sessions.probe import ping
from hangar.sessions.session import Session

if TYPE_CHECKING:
    from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar.sessions")

BUSY_POLL_S = 5.0
MAX_TICK_S = 1.0  # the warm pool's sweep runs at least this often
MIN_TICK_S = 0.05
POLLED_TICK_S = 1.0  # how often a sandbox without an exit pid is asked whether it lives


class Lifecycle:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.looks = 0  # sessions looked at, all passes together (a quiet server adds none)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._heap: list[tuple[float, int, Session]] = []  # (when to look, tie-break, session); stale entries skipped
        self._next: dict[Session, float] = {}  # each tracked session's one current look
        self._order = itertools.count()
        self._exit_fds: dict[Session, int] = {}
        self._polled: set[Session] = set()  # no exit pid to watch: alive() on every pass

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hangar-session-lifecycle")

    def wake(self, session: Session | None = None) -> None:
        """A session started: track it (its timeouts may be shorter than the current wait) and re-plan."""
        if session is not None and session not in self._next:
            self._schedule(session, time.time())
            self._watch_exit(session)
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
        for session in list(self._next):
            self._forget(session)

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
        wait = MAX_TICK_S
        if self._heap:
            wait = min(wait, self._heap[0][0] - time.time())
        if self._polled:
            wait = min(wait, POLLED_TICK_S)
        return max(MIN_TICK_S, wait)

    async def sweep(self) -> None:
        """Look at the sessions whose time came (and the polled ones); end those whose time is up."""
        now = time.time()
        self.manager.expire_spares(now)
        due: list[Session] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, session = heapq.heappop(self._heap)
            if self._next.get(session) == when:
                del self._next[session]
                due.append(session)
        ending: list[tuple[Session, str]] = []
        for session in list(self._polled - set(due)):  # not due: only whether it lives
            if session.ended_at is not None:
                self._forget(session)
            elif not session.sandbox.alive():
                ending.append((session, "agent exited"))
        to_ping: list[Session] = []
        self.looks += len(due)
        for session in due:
            if session.ended_at is not None:
                self._forget(session)
            elif not session.sandbox.alive():
                ending.append((session, "agent exited"))
            elif now >= session.expires_at:
                ending.append((session, "max lifetime reached"))
            elif session.inflight:
                self._schedule(session, min(now + session.idle_timeout_s, session.expires_at))
            elif _ping_due(session, now):
                to_ping.append(session)
            else:
                self._schedule(session, _next_look(session))
        answers = await asyncio.gather(*(ping(s.client) for s in to_ping))
        for session, answer in zip(to_ping, answers, strict=True):
            if session.ended_at is not None:
                self._forget(session)
                continue
            now = time.time()
            if session.inflight:
                self._schedule(session, min(now + session.idle_timeout_s, session.expires_at))
                continue
            if answer is not None and answer.status == "HealthyBusy" and answer.time_of_last_update is not None:
                session.busy = True
                session.last_activity = now
                session.next_ping_at = now + min(session.idle_timeout_s, BUSY_POLL_S)
                self._schedule(session, _next_look(session))
                continue
            was_busy, session.busy = session.busy, False
            if was_busy and answer is not None and answer.time_of_last_update is not None:
                # Busy ended at time_of_last_update: the idle clock starts there.
                session.last_activity = max(session.last_activity, min(answer.time_of_last_update, now))
            if now - session.last_activity >= session.idle_timeout_s:
                ending.append((session, "idle timeout"))
            else:
                self._schedule(session, _next_look(session))
        if ending:
            await asyncio.gather(*(self.manager.end(s, reason) for s, reason in ending))
            for session, _ in ending:
                self._forget(session)
        self._compact()

    def watched_exits(self) -> int:
        """How many sessions' exits are watched through a pidfd (the rest are polled)."""
        return len(self._exit_fds)

    def _schedule(self, session: Session, when: float) -> None:
        self._next[session] = when
        heapq.heappush(self._heap, (when, next(self._order), session))

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones (sessions ended elsewhere, moved looks)."""
        if len(self._heap) > 2 * len(self._next) + 64:
            self._heap = [entry for entry in self._heap if self._next.get(entry[2]) == entry[0]]
            heapq.heapify(self._heap)

    def _watch_exit(self, session: Session) -> None:
        """Have the event loop tell when the sandbox's first process exits; else poll ``alive()``."""
        pid = session.sandbox.exit_pid()
        fd = -1
        if pid is not None:
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)
        if fd < 0 or not session.sandbox.alive():  # alive after the open: the pidfd is of the sandbox's own process
            if fd >= 0:
                os.close(fd)
            self._polled.add(session)
            return
        self._exit_fds[session] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, session)

    def _exited(self, session: Session) -> None:
        self._unwatch(session)
        if session.ended_at is not None:
            self._forget(session)
            return
        self._schedule(session, 0.0)  # on the next pass, which starts now
        self._wake.set()

    def _unwatch(self, session: Session) -> None:
        fd = self._exit_fds.pop(session, None)
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _forget(self, session: Session) -> None:
        self._unwatch(session)
        self._next.pop(session, None)
        self._polled.discard(session)


def _ping_due(session: Session, now: float) -> bool:
    if session.busy:
        return now >= session.next_ping_at
    return now - session.last_activity >= session.idle_timeout_s


def _next_look(session: Session) -> float:
    """When the session's idle time ends as things stand (or its next busy ping), at the latest its max lifetime."""
    deadline = session.next_ping_at if session.busy else session.last_activity + session.idle_timeout_s
    return min(deadline, session.expires_at)
