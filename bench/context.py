"""What every suite shares in one run: the Hangar server, deployed agents, sizes for full or smoke runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.hangar_instance import HangarInstance

AGENTS = Path(__file__).resolve().parent / "agents"
WARM_POOL = 2  # spares kept for each ``*_warm`` runtime
WARM_AGENTS = ("echo_sdk", "heavy")


def runtime_name(agent: str, *, warm: bool = False) -> str:
    return f"bench_{agent}_warm" if warm else f"bench_{agent}"


def warm_pool_setting() -> str:
    """``HANGAR_WARM_POOL_RUNTIMES`` for the bench server: only the ``*_warm`` runtimes keep spares."""
    return json.dumps({runtime_name(agent, warm=True): WARM_POOL for agent in WARM_AGENTS})


@dataclass
class BenchContext:
    hangar: HangarInstance
    smoke: bool
    deployed: dict[str, str] = field(default_factory=dict)  # runtime name -> runtime ARN

    def arn(self, agent: str, *, warm: bool = False) -> str:
        """Deploy ``bench/agents/<agent>`` once per run and return its ARN.

        ``warm``: the same code as a second runtime that has a warm pool (``runtime_name``), so cold and pooled
        starts of one agent are measured side by side on one server.
        """
        name = runtime_name(agent, warm=warm)
        if name not in self.deployed:
            self.deployed[name] = self.hangar.deploy(AGENTS / agent, name=name)
        return self.deployed[name]

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full
