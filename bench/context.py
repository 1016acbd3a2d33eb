"""What every suite shares in one run: the Hangar server, deployed agents, sizes for full or smoke runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.hangar_instance import HangarInstance

AGENTS = Path(__file__).resolve().parent / "agents"
WARM_POOL = 2  # spares kept for each ``*_warm`` runtime
WARM_AGENTS = ("echo_sdk", "echo_agentcore", "heavy")
# The bench server's session caps: density keeps 1,000 forked sessions of one runtime alive at once and starts new
# ones beside them (the defaults, 1,000 in all and 500 per runtime, would leave no room for those and the spares).
SESSION_CAPS = {"HANGAR_MAX_SESSIONS": "3000", "HANGAR_MAX_SESSIONS_PER_RUNTIME": "1500"}

Kind = Literal["template", "cold", "warm"]
SUFFIX: dict[str, str] = {"template": "", "cold": "_cold", "warm": "_warm"}


def runtime_name(agent: str, kind: Kind = "template") -> str:
    return f"bench_{agent}{SUFFIX[kind]}"


def warm_pool_setting() -> str:
    """``HANGAR_WARM_POOL_RUNTIMES`` for the bench server: only the ``*_warm`` runtimes keep spares."""
    return json.dumps({runtime_name(agent, "warm"): WARM_POOL for agent in WARM_AGENTS})


def server_env() -> dict[str, str]:
    return {"HANGAR_WARM_POOL_RUNTIMES": warm_pool_setting(), **SESSION_CAPS}


@dataclass
class BenchContext:
    hangar: HangarInstance
    smoke: bool
    soak_seconds: float | None = None  # the soak's length when set (else 30 minutes, or 60 s in a smoke run)
    deployed: dict[str, str] = field(default_factory=dict)  # runtime name -> runtime ARN

    def arn(self, agent: str, kind: Kind = "template") -> str:
        """Deploy ``bench/agents/<agent>`` once per run as the runtime of ``kind`` and return its ARN.

        The same code, up to three runtimes on one server, so the start kinds are measured side by side:
        ``template`` (the default: new sessions fork from the version's warm template), ``cold`` (opted out of
        templates with ``HANGAR_TEMPLATE=off``: every session starts its sandbox from nothing) and ``warm`` (a
        warm pool of ``WARM_POOL`` spares, themselves forked from the template; a session claims one).
        """
        name = runtime_name(agent, kind)
        if name not in self.deployed:
            extra: dict[str, object] = {}
            if kind == "cold":
                extra["environmentVariables"] = {"HANGAR_TEMPLATE": "off"}
            self.deployed[name] = self.hangar.deploy(AGENTS / agent, name=name, **extra)
        return self.deployed[name]

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full
