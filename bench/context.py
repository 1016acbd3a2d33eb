"""What every suite shares in one run: the Hangar server, deployed agents, sizes for full or smoke runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.hangar_instance import HangarInstance

AGENTS = Path(__file__).resolve().parent / "agents"


@dataclass
class BenchContext:
    hangar: HangarInstance
    smoke: bool
    deployed: dict[str, str] = field(default_factory=dict)  # agent folder name -> runtime ARN

    def arn(self, agent: str, **extra: object) -> str:
        """Deploy ``bench/agents/<agent>`` once per run and return its ARN."""
        if agent not in self.deployed:
            self.deployed[agent] = self.hangar.deploy(AGENTS / agent, name=f"bench_{agent}", **extra)
        return self.deployed[agent]

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full
