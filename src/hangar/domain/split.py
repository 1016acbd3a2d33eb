"""Traffic split (Hangar-only, beyond AgentCore): an endpoint sends a percentage of NEW sessions to another version.

A split names two versions with integer weights summing to 100. Which version a session gets is a pure function
of (runtime, endpoint, session id): a SHA-256 of them picks a bucket out of 10,000, so every call with a session
id (another gateway process, after a restart) finds the same version while the split is unchanged, with nothing to
store. A session that is running stays on the version that started it whatever the split says later (the session
manager binds a live session to its version). A split is tied to the endpoint's live version when it was set: when the
endpoint moves (UpdateAgentRuntimeEndpoint, or a new version for DEFAULT) the split no longer applies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hangar.domain.errors import ValidationError

BUCKETS = 10_000
_ROUTE = re.compile(r"[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class Split:
    """Weights (percent) per version number, and the endpoint's live version the split was set on."""

    base_version: int
    weights: tuple[tuple[int, int], ...]  # ((version, percent), ...) in the order given

    def choose(self, runtime_id: str, endpoint_name: str, session_id: str) -> int:
        """The version a new session with this id runs (deterministic, uniform over session ids)."""
        digest = hashlib.sha256(f"{runtime_id}\0{endpoint_name}\0{session_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % BUCKETS
        edge = 0
        for version, percent in self.weights:
            edge += percent * BUCKETS // 100
            if bucket < edge:
                return version
        return self.weights[-1][0]

    def describe(self) -> list[dict[str, object]]:
        """The wire form: ``[{"agentRuntimeVersion": "1", "weight": 90}, ...]``."""
        return [{"agentRuntimeVersion": str(version), "weight": percent} for version, percent in self.weights]


def parse_routes(routes: object) -> tuple[tuple[int, int], ...]:
    """Validate ``[{"agentRuntimeVersion": "1", "weight": 90}, {"agentRuntimeVersion": "2", "weight": 10}]``:
    exactly two different versions, integer weights 0-100 summing to 100."""
    if not isinstance(routes, list) or len(routes) != 2:
        raise ValidationError("routes must list exactly two versions")
    parsed: list[tuple[int, int]] = []
    for route in routes:
        if not isinstance(route, Mapping):
            raise ValidationError("each route is {agentRuntimeVersion, weight}")
        version, weight = route.get("agentRuntimeVersion"), route.get("weight")
        if not isinstance(version, str) or _ROUTE.fullmatch(version) is None:
            raise ValidationError(f"Invalid agentRuntimeVersion {version!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ValidationError(f"weight must be an integer from 0 to 100, not {weight!r}")
        parsed.append((int(version), weight))
    if parsed[0][0] == parsed[1][0]:
        raise ValidationError("a split needs two different versions")
    if sum(weight for _, weight in parsed) != 100:
        raise ValidationError("the weights of a split must sum to 100")
    return tuple(parsed)
