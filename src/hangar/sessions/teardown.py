"""A stop answers once its sandbox is dead; the teardown after that goes on in the background, bounded.

``StopRuntimeSession`` (and every other end of a session) used to wait for the whole stop: the agent's exit, the
kill, then the release (netns delete, cgroup rmdir, tmpfs unmount, state-dir removal, uid lease). Once every
process of the sandbox is killed (``SupervisedSandbox.dead``) the session can do nothing more, so the caller is
answered then; the release finishes in the close task, which shutdown still waits for and which a restart's
orphan cleaning replaces if Hangar dies first. A session with a session storage is answered after its whole
close (the unmount records the storage's last use, which the caller may read next). At most ``BACKLOG`` closes
run behind their answers: past that a stop waits for its whole close again, so a burst of stops cannot pile up
teardowns faster than they finish.
"""

from __future__ import annotations

import asyncio
import logging

from hangar.sandbox.base import Sandbox

log = logging.getLogger(__name__)

BACKLOG = 16


class Teardowns:
    """The closes still running after their stop was answered."""

    def __init__(self) -> None:
        self.behind: set[asyncio.Task[None]] = set()

    async def until_dead(self, sandbox: Sandbox, close: asyncio.Task[None], whole: bool = False) -> None:
        """Return once ``close`` is done or, with room in the backlog, once the sandbox's processes are dead.

        ``whole``: wait for the whole close anyway (a session storage is unmounted and its last use recorded in it:
        once the stop is answered, what the caller reads of that storage is settled)."""
        dead = getattr(sandbox, "dead", None)  # backends without the event are waited for in full
        if not whole and isinstance(dead, asyncio.Event) and len(self.behind) < BACKLOG:
            waiter = asyncio.ensure_future(dead.wait())
            try:
                await asyncio.wait({close, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not close.done():
                self.behind.add(close)
                close.add_done_callback(self._finished)
                return
        await close

    def _finished(self, close: asyncio.Task[None]) -> None:
        self.behind.discard(close)
        if not close.cancelled() and close.exception() is not None:
            log.error("a session's teardown failed", exc_info=close.exception())
