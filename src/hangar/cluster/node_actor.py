"""``NodeAgent``: one Ray actor per ``hangar node``, the node's face in the cluster (placement reads it).

The node process creates it, named ``node:<name>`` in namespace "hangar", hard-pinned to the node's own Ray node
and owned by the node process (not detached), so it dies with that process and Ray reports the node gone. The
node pushes its state about once a second (``update``); gateways read ``describe()`` and an operator's
``drain()`` reaches the node on its next push. The actor holds no sessions and carries no data: calls go straight
to the node's HTTP API (node_api.py).
"""

from __future__ import annotations

import time
from typing import Any

from hangar.cluster.placement import GONE_AFTER_S
from hangar.cluster.ray_link import NAMESPACE, ray_module

ACTOR_PREFIX = "node:"
STALE_S = 5.0  # no push for this long: the node process is stuck, so the actor reports it unhealthy


def actor_name(node_name: str) -> str:
    return ACTOR_PREFIX + node_name


class NodeAgent:
    """State of one node as its process last reported it, plus the operator's drain flag."""

    def __init__(self, name: str, address: str, capacity: int) -> None:
        self._state: dict[str, Any] = {
            "name": name,
            "address": address,
            "capacity": capacity,
            "sessions": 0,
            "memoryBytes": 0,
            "templates": [],
        }
        self._draining = False
        self._pushed_at = time.monotonic()
        self._epoch = 0  # bumped when a push ends a silence the gateways took for death (node_return.py)
        self._cleaned = 0  # the last epoch whose old sessions the node reports ended

    def describe(self) -> dict[str, Any]:
        """``{"name", "address", "capacity", "sessions", "memoryBytes", "templates", "draining", "healthy",
        "silentSeconds", "epoch", "returning"}``."""
        silent = time.monotonic() - self._pushed_at
        returning = self._cleaned < self._epoch  # back from the dead, its old sandboxes not ended yet: gone still
        return {
            **self._state,
            "draining": self._draining,
            "healthy": silent < STALE_S and not returning,
            "silentSeconds": round(silent, 3),  # a node cut off from the network stops pushing: gateways see it here
            "epoch": self._epoch,
            "returning": returning,
        }

    def drain(self) -> None:
        """No new sessions on this node from now on; its live sessions keep being served."""
        self._draining = True

    def update(self, state: dict[str, Any]) -> bool:
        """The node's push: its current state in, whether it is draining back. A push after a silence of
        ``GONE_AFTER_S`` or more opens a new epoch: the gateways may have ended this node's sessions meanwhile."""
        if time.monotonic() - self._pushed_at >= GONE_AFTER_S:
            self._epoch += 1
        self._state.update({k: v for k, v in state.items() if k in self._state and k != "name"})
        self._pushed_at = time.monotonic()
        return self._draining

    def epoch(self) -> tuple[int, int]:
        """``(epoch, cleaned)``: the node has old sessions to end while ``cleaned < epoch``."""
        return self._epoch, self._cleaned

    def cleaned(self, epoch: int) -> None:
        """The node ended every session it had before ``epoch``: it is a node like any other again."""
        self._cleaned = max(self._cleaned, min(epoch, self._epoch))


def create(name: str, address: str, capacity: int) -> Any:
    """Create this node's actor on the Ray node this process is attached to (after ``ray_link.connect``).

    A previous actor of the same name (the process that owned it was killed a moment ago) is waited out."""
    ray = ray_module()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote_class = ray.remote(NodeAgent)
    node_id = ray.get_runtime_context().get_node_id()
    deadline = time.monotonic() + 60  # Ray notices the old owner's death within seconds; a loaded host takes longer
    while True:
        try:
            handle = remote_class.options(
                name=actor_name(name),
                namespace=NAMESPACE,
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            ).remote(name, address, capacity)
            ray.get(handle.describe.remote(), timeout=60)
            return handle
        except ValueError:  # the name is still taken by the dead owner's actor
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
