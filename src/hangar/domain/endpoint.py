"""Endpoints: named, addressable pointers at one version of a runtime.

``DEFAULT`` is made with the runtime and follows every new version; named endpoints stay pinned until
UpdateAgentRuntimeEndpoint moves them. While a move is under way the endpoint is UPDATING with
``target_version`` set and keeps serving ``live_version``; once the target version is READY the target
becomes live.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hangar.domain.runtime import Status


@dataclass(frozen=True)
class Endpoint:
    runtime_id: str
    name: str
    endpoint_id: str
    status: Status
    created_at: datetime
    updated_at: datetime
    live_version: int | None = None
    target_version: int | None = None
    description: str | None = None
    failure_reason: str | None = None

    def references(self, version: int) -> bool:
        """True when this endpoint serves ``version`` or is moving to it."""
        return version in (self.live_version, self.target_version)
