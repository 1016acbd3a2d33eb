"""Caps on live sessions and the resource limits every sandbox gets, both from the settings."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hangar.config import Settings
from hangar.domain.errors import ServiceQuotaExceededError
from hangar.sandbox.base import Limits

MIB = 1024 * 1024


def sandbox_limits(settings: Settings) -> Limits:
    return Limits(
        memory_bytes=settings.session_memory_mib * MIB,
        cpus=settings.session_cpus,
        pids=settings.session_pids,
        disk_bytes=settings.session_tmp_mib * MIB,
    )


def version_limits(base: Limits, minimum_memory_mib: int | None) -> Limits:
    """A version's sandbox limits: its ``resourceConfigurations`` minimum memory raises the installation's memory
    limit (never lowers it); the control plane refused minimums larger than the host."""
    if minimum_memory_mib is None or minimum_memory_mib * MIB <= base.memory_bytes:
        return base
    return replace(base, memory_bytes=minimum_memory_mib * MIB)


class SessionQuota:
    """Counts sessions (live and starting) globally and per runtime; ``reserve`` before starting a sandbox."""

    def __init__(self, settings: Settings) -> None:
        self.max_total = settings.max_sessions
        self.max_per_runtime = settings.max_sessions_per_runtime
        self.total = 0
        self.per_runtime: Counter[str] = Counter()

    def reserve(self, runtime_id: str) -> None:
        if self.total >= self.max_total:
            raise ServiceQuotaExceededError(
                f"This installation already runs {self.total} sessions (max_sessions={self.max_total}); "
                "stop a session or wait for idle sessions to end"
            )
        if self.per_runtime[runtime_id] >= self.max_per_runtime:
            raise ServiceQuotaExceededError(
                f"Runtime {runtime_id} already has {self.per_runtime[runtime_id]} sessions "
                f"(max_sessions_per_runtime={self.max_per_runtime}); stop a session or wait for idle sessions to end"
            )
        self.total += 1
        self.per_runtime[runtime_id] += 1

    def release(self, runtime_id: str) -> None:
        self.total = max(0, self.total - 1)
        self.per_runtime[runtime_id] -= 1
        if self.per_runtime[runtime_id] <= 0:
            del self.per_runtime[runtime_id]
