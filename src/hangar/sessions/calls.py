"""The call lease: the one way a handler uses a session, so Active/Idle bookkeeping has one owner.

A ``Lease`` marks its session Active from the moment it is taken until ``release``, which runs exactly once: when
the ``async with manager.call(...)`` (or ``manager.use(session)``) block is left, or, for a streamed answer, when
the stream's ``on_end`` (from ``hand_off``) runs. Should a handed-off lease never reach its stream (the response is
dropped unsent), a finalizer releases it when the lease is collected, so a session can never stay Active for good.

Everything a handler needs from the sandbox goes through the lease or the session (requests to the agent, commands,
the socket for a WebSocket, liveness, stats); a broken connection to the agent is reported here, which ends the
session when the agent's process tree is gone.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING

from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import ExecEvent
from hangar.sessions.agent_http import AgentHttpError, AgentResponse, Body
from hangar.sessions.session import Session

if TYPE_CHECKING:
    from hangar.sessions.manager import SessionManager

# Called once when a streamed answer is over: True when it completed (or the client left), False when it broke.
OnEnd = Callable[[bool], Awaitable[None]]


class Lease:
    """One use of a session (an invoke, a command, a WebSocket, an MCP goodbye): Active until released."""

    def __init__(self, manager: SessionManager, session: Session) -> None:
        self._manager = manager
        self.session = session
        session._begin()
        # Runs ``_finish`` at most once: on release, or when a lease nobody released is collected.
        self._release = weakref.finalize(self, session._finish)
        self.handed_off = False

    @property
    def released(self) -> bool:
        return not self._release.alive

    @property
    def socket_path(self) -> str:
        """The agent's Unix socket (for a WebSocket to its ``/ws``), valid while the lease is held."""
        return self.session.socket_path

    def release(self) -> None:
        """The call is over: the session is Idle again unless another call holds it. Idempotent."""
        self._release()

    def hand_off(self) -> OnEnd:
        """Give the lease to a streamed response: leaving the block no longer releases it, the returned ``on_end``
        does (exactly once), and a stream that broke makes the manager check whether the agent died."""
        self.handed_off = True

        async def on_end(completed: bool) -> None:
            self.release()
            if not completed:
                self._manager._agent_failed_later(self.session)

        return on_end

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: Body = b"") -> AgentResponse:
        """Send a request to the agent; its open answer once status and headers are in (any status).

        A connection failure or a non-HTTP answer is a RuntimeClientError (424), after the manager has checked
        whether the agent died (then the session has ended)."""
        try:
            return await self.session.client.request(method, path, headers, body)
        except AgentHttpError as exc:
            ended = await self.broken()
            cause = "the agent process exited" if ended else str(exc)
            raise RuntimeClientError(f"The agent did not return a valid HTTP response ({cause})") from exc

    async def exec(self, command: str, timeout: float) -> AsyncGenerator[ExecEvent, None]:
        """Run ``/bin/sh -c command`` in the session's sandbox, streaming its output (close it when done)."""
        events = self.session.sandbox.exec(command, timeout)
        try:
            async for event in events:
                yield event
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def broken(self) -> bool:
        """The connection to the agent broke: ends the session if its process tree is gone. True when it ended."""
        return await self._manager._agent_failed(self.session)
