"""Shapes shared across packages: who is calling, and names of things."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``kind`` tells how it was proven: a SigV4 signature made with a Hangar access key, a bearer JWT accepted by
    a runtime's ``customJWTAuthorizer`` (then ``subject`` and ``claims`` come from the token), or a session's own
    short-lived credentials on the sandbox's identity channel (then ``workload`` and ``session_id`` say whose: such a
    caller may only act for its own workload identity).
    """

    kind: Literal["sigv4", "jwt", "session"]
    account_id: str
    name: str
    access_key_id: str | None = None
    subject: str | None = None
    claims: dict[str, object] | None = None
    workload: str | None = None
    session_id: str | None = None
