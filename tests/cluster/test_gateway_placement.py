"""Placement's choice among node descriptions (``cluster/placement.candidates``): who may take a new session, and
in which order; no Ray needed (the descriptions are what ``NodeAgent.describe()`` returns)."""

from __future__ import annotations

from typing import Any

from hangar.cluster.placement import GONE_AFTER_S, NodeInfo, candidates, template_key

TEMPLATE = template_key("rt-1", "3")


def node(name: str, *, capacity: int = 8, sessions: int = 0, memory: int = 1 << 30, **extra: Any) -> NodeInfo:
    doc = {"name": name, "address": f"http://127.0.0.1:1/{name}/", "capacity": capacity, "sessions": sessions}
    return NodeInfo.from_describe({**doc, "memoryBytes": memory, **extra})


def names(nodes: list[NodeInfo]) -> list[str]:
    return [n.name for n in nodes]


def test_only_healthy_undrained_nodes_with_a_free_slot() -> None:
    nodes = [
        node("full", sessions=8),
        node("draining", draining=True),
        node("sick", healthy=False),
        node("ok", sessions=7),
    ]
    assert names(candidates(nodes, TEMPLATE)) == ["ok"]
    assert candidates(nodes, TEMPLATE, exclude=["ok"]) == []


def test_most_free_slots_then_memory_then_name() -> None:
    nodes = [node("b", sessions=2), node("a", sessions=2), node("c", sessions=1), node("d", sessions=2, memory=2 << 30)]
    assert names(candidates(nodes, TEMPLATE)) == ["c", "d", "a", "b"]


def test_a_live_template_wins_until_its_node_is_clearly_busier() -> None:
    warm = {"templates": [TEMPLATE, "rt-9:1"]}
    assert names(candidates([node("cold"), node("warm", sessions=1, **warm)], TEMPLATE)) == ["warm", "cold"]
    assert names(candidates([node("cold"), node("warm", sessions=2, **warm)], TEMPLATE)) == ["cold", "warm"]
    other_version = template_key("rt-1", "4")
    assert names(candidates([node("cold"), node("warm", sessions=1, **warm)], other_version)) == ["cold", "warm"]


def test_the_description_is_read_leniently_and_given_back() -> None:
    info = NodeInfo.from_describe({"name": "n", "address": "http://h:1/", "capacity": 4, "sessions": None})
    assert (info.free_slots, info.healthy, info.draining, info.address) == (4, True, False, "http://h:1")
    assert info.describe()["templates"] == [] and info.describe()["sessions"] == 0
    assert node("over", capacity=2, sessions=5).free_slots == 0


def test_a_node_silent_too_long_is_gone() -> None:
    """A host cut off from the network keeps its actor alive, but its process stops pushing: unhealthy (no new
    sessions) first, then gone (its sessions end) once silent for ``GONE_AFTER_S``."""
    doc = {"name": "n", "address": "http://h:1", "capacity": 4, "healthy": False}
    assert not NodeInfo.from_describe({**doc, "silentSeconds": GONE_AFTER_S - 1}).gone
    gone = NodeInfo.from_describe({**doc, "silentSeconds": GONE_AFTER_S})
    assert gone.gone and gone.describe()["silentSeconds"] == GONE_AFTER_S
    assert candidates([gone], "", []) == []
