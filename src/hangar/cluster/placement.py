"""Where a new session goes: the nodes as their ``NodeAgent`` actors describe them, and the choice among them.

Why the actor-describe route rather than Ray's scheduler: a session is not a Ray task or actor (it is a sandbox
owned by its node's process), so Ray never holds its resources. Expressing slots as custom resources would need a
placeholder actor per session to hold them (≈80 MiB of worker process each, spec/probes.md Part 2) and would leave
Ray's accounting and the node's real one to drift apart. Each node's own description (slots, sessions, free memory,
warm templates, draining) is the truth; the gateway reads it (cached ~1 s) and chooses, and a node that refuses
(full, draining: it knows better than a 1 s old description) sends the choice on to the next candidate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger("hangar.cluster")

ACTOR_PREFIX = "node:"
DESCRIBE_TIMEOUT_S = 2.0
GONE_AFTER_S = 10.0  # a node silent this long is dead to the gateways (unhealthy, no new sessions, after 5 s)
CACHE_S = 1.0


@dataclass(frozen=True)
class NodeInfo:
    """One node as its actor described it (``NodeAgent.describe()``)."""

    name: str
    address: str
    capacity: int
    sessions: int
    memory_bytes: int
    templates: frozenset[str] = field(default_factory=frozenset)
    draining: bool = False
    healthy: bool = True
    silent_s: float = 0.0  # since the node's last push to its actor
    epoch: int = 0  # how many times it came back after the gateways took it for dead (node_return.py)
    returning: bool = False  # back, but still ending the sessions it had before: as good as gone

    @property
    def gone(self) -> bool:
        """Silent past ``GONE_AFTER_S``: treated as dead even though Ray still lists its actor. A host whose link is
        down keeps its actor alive wherever Ray placed it (or until Ray's own health check, ~17 s by default), and
        its process cannot push: its sessions end and their ids start afresh elsewhere. A node that pushes again
        after that stays gone (``returning``) until it has ended every sandbox it had (node_return.py)."""
        return self.silent_s >= GONE_AFTER_S or self.returning

    @classmethod
    def from_describe(cls, doc: dict[str, Any]) -> NodeInfo:
        return cls(
            name=str(doc["name"]),
            address=str(doc["address"]).rstrip("/"),
            capacity=int(doc.get("capacity") or 0),
            sessions=int(doc.get("sessions") or 0),
            memory_bytes=int(doc.get("memoryBytes") or 0),
            templates=frozenset(str(t) for t in doc.get("templates") or ()),
            draining=bool(doc.get("draining")),
            healthy=bool(doc.get("healthy", True)),
            silent_s=float(doc.get("silentSeconds") or 0.0),
            epoch=int(doc.get("epoch") or 0),
            returning=bool(doc.get("returning")),
        )

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.sessions)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "capacity": self.capacity,
            "sessions": self.sessions,
            "memoryBytes": self.memory_bytes,
            "templates": sorted(self.templates),
            "draining": self.draining,
            "healthy": self.healthy,
            "silentSeconds": self.silent_s,
            "epoch": self.epoch,
            "returning": self.returning,
        }


def template_key(runtime_id: str, version: str) -> str:
    """How a node names a version it holds a live warm template of."""
    return f"{runtime_id}:{version}"


def candidates(nodes: Iterable[NodeInfo], template: str, exclude: Iterable[str] = ()) -> list[NodeInfo]:
    """The nodes that may take a new session, best first.

    Healthy, not draining, a free slot; then the most free slots, where a live template of the version (a fork
    instead of a cold start) counts as a quarter of the node's slots more: a node with the template is preferred
    until it is clearly busier than one without (which then gets a session, and soon a template of its own). Then
    the most free memory; the name breaks ties so every gateway orders alike."""
    skip = set(exclude)
    eligible = [n for n in nodes if n.healthy and not n.draining and n.free_slots > 0 and n.name not in skip]

    def score(node: NodeInfo) -> int:
        return node.free_slots + (max(1, node.capacity // 4) if template in node.templates else 0)

    return sorted(eligible, key=lambda n: (-score(n), -n.memory_bytes, n.name))


class NodeDirectory:
    """Every live node, read from the Ray actors named ``node:*`` in namespace "hangar", cached for ~1 s.

    A node whose actor is gone (its process or its Ray node died: the actor is owned by the node process) drops out
    of the next read; ``gone`` reports the nodes seen before and missing now, which is how node death is learned."""

    def __init__(self, cache_s: float = CACHE_S) -> None:
        self._cache_s = cache_s
        self._nodes: dict[str, NodeInfo] = {}
        self._read_at = 0.0
        self._epochs: dict[str, int] = {}  # each node's epoch at the last read
        self._returned: set[str] = set()  # nodes whose epoch moved on since: see ``returned``
        self._lock = asyncio.Lock()

    async def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        async with self._lock:
            if fresh or time.monotonic() - self._read_at > self._cache_s:
                self._nodes = {n.name: n for n in await asyncio.to_thread(_read_actors)}
                self._read_at = time.monotonic()
                for node in self._nodes.values():
                    if self._epochs.setdefault(node.name, node.epoch) != node.epoch:
                        self._returned.add(node.name)
                        self._epochs[node.name] = node.epoch
            return list(self._nodes.values())

    def returned(self) -> set[str]:
        """The nodes that came back from the dead since the last ask (their epoch moved on), even if this gateway
        never saw them gone: no binding of theirs remembered from before may be used."""
        found, self._returned = self._returned, set()
        return found

    def cached(self) -> list[NodeInfo]:
        """The nodes as last read (no call to Ray: for a metrics scrape)."""
        return sorted(self._nodes.values(), key=lambda n: n.name)

    def known(self, name: str) -> NodeInfo | None:
        """The last description of a node (without asking Ray)."""
        return self._nodes.get(name)

    def placed(self, name: str) -> None:
        """Count a session just placed on a node until its next description (a burst of new sessions spreads)."""
        node = self._nodes.get(name)
        if node is not None:
            self._nodes[name] = replace(node, sessions=node.sessions + 1)

    async def drain(self, name: str) -> bool:
        """Ask a node to take no new sessions; False when no such node is alive."""
        done = await asyncio.to_thread(_call_actor, name, "drain")
        if done:
            self._read_at = 0.0
        return done


def _read_actors() -> list[NodeInfo]:
    """Describe every ``node:*`` actor at once; one that cannot answer in time is left out (and logged)."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if _is_node(a)]
    refs: dict[str, Any] = {}
    for name in names:
        try:
            refs[name] = ray.get_actor(name, namespace="hangar").describe.remote()
        except ValueError:  # died between the listing and the lookup
            continue
    nodes = []
    for name, ref in refs.items():
        try:
            nodes.append(NodeInfo.from_describe(ray.get(ref, timeout=DESCRIBE_TIMEOUT_S)))
        except Exception as exc:  # a dead or hung actor: not a candidate, the directory must still answer
            log.warning("node actor %s did not describe itself: %s", name, exc)
    return nodes


def _is_node(actor: dict[str, str]) -> bool:
    return actor.get("namespace") == "hangar" and str(actor.get("name", "")).startswith(ACTOR_PREFIX)


def _call_actor(node: str, method: str) -> bool:
    import ray

    try:
        actor = ray.get_actor(ACTOR_PREFIX + node, namespace="hangar")
        ray.get(getattr(actor, method).remote(), timeout=DESCRIBE_TIMEOUT_S)
    except ValueError:
        return False
    return True
