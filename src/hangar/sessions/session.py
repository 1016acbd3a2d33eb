"""One live session: the sandbox serving it, the pooled HTTP client to its agent, and its activity clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import Sandbox, SandboxStats
from hangar.sessions.agent_http import AgentHttp


class SessionState(StrEnum):
    ACTIVE = "Active"  # a request, stream, command or WebSocket in flight, or /ping says HealthyBusy
    IDLE = "Idle"
    TERMINATED = "Terminated"


class SessionKey(NamedTuple):
    runtime_id: str
    session_id: str


@dataclass(eq=False)
class Session:
    """Mutable state of one session; only the session manager, its lifecycle loop and its call leases change it."""

    key: SessionKey
    target: InvocationTarget  # the version that served the first call: the session stays on it
    sandbox: Sandbox
    client: AgentHttp  # one pooled client per sandbox, over its Unix socket
    idle_timeout_s: float
    max_lifetime_s: float
    start_kind: str = "cold"  # warm: a warm-pool spare; fork: forked from the version's template; cold: started
    cold_reason: str | None = None  # why a session that could have been forked started cold
    spare_kind: str | None = None  # warm: how its spare was started (fork: a forked spare; cold)
    started_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    inflight: int = 0
    busy: bool = False  # the last /ping said HealthyBusy (with time_of_last_update)
    next_ping_at: float = 0.0
    end_reason: str | None = None
    ended_at: float | None = None

    @property
    def state(self) -> SessionState:
        if self.ended_at is not None:
            return SessionState.TERMINATED
        if self.inflight or self.busy:
            return SessionState.ACTIVE
        return SessionState.IDLE

    @property
    def expires_at(self) -> float:
        return self.started_at + self.max_lifetime_s

    @property
    def sandbox_id(self) -> str:
        return self.sandbox.id

    @property
    def socket_path(self) -> str:
        """The agent's Unix socket (what a WebSocket to its ``/ws`` connects to)."""
        return str(self.sandbox.socket_path)

    def alive(self) -> bool:
        """True while the agent's process tree runs."""
        return self.sandbox.alive()

    async def stats(self) -> SandboxStats:
        """Memory, pids and CPU of the sandbox (raises when it is ending right now)."""
        return await self.sandbox.stats()

    def _begin(self) -> None:
        """A call took a lease (``sessions/calls.py``, the only caller): Active until the matching ``_finish``."""
        self.inflight += 1
        self.last_activity = time.time()

    def _finish(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        self.last_activity = time.time()

    def describe(self) -> dict[str, object]:
        return {
            "runtimeId": self.key.runtime_id,
            "runtimeArn": self.target.runtime_arn,
            "runtimeSessionId": self.key.session_id,
            "endpointName": self.target.endpoint_name,
            "agentRuntimeVersion": self.target.version,
            "state": self.state.value,
            "sandboxId": self.sandbox.id,
            "startKind": self.start_kind,
            "coldReason": self.cold_reason,
            "spareKind": self.spare_kind,
            "startedAt": self.started_at,
            "lastActivityAt": self.last_activity,
            "inflight": self.inflight,
            "idleTimeoutSeconds": self.idle_timeout_s,
            "maxLifetimeSeconds": self.max_lifetime_s,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
        }
