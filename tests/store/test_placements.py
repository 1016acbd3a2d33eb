"""Session placements (cluster mode) on SQLite and PostgreSQL: first placement wins, guarded removal, node death."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from hangar.store import placements
from hangar.store.engine import migrate
from hangar.store.transactions import Store


@pytest.fixture
def store(bare_engine: Engine) -> Iterator[Store]:
    migrate(bare_engine)
    yield Store(bare_engine)


def test_first_placement_wins_and_later_ones_see_it(store: Store) -> None:
    assert store.write(lambda c: placements.place(c, "rt-1", "s" * 40, "node-a")) == "node-a"
    assert store.write(lambda c: placements.place(c, "rt-1", "s" * 40, "node-b")) == "node-a"
    assert store.read(lambda c: placements.node_of(c, "rt-1", "s" * 40)) == "node-a"
    assert store.read(lambda c: placements.node_of(c, "rt-2", "s" * 40)) is None


def test_removal_guarded_by_node(store: Store) -> None:
    store.write(lambda c: placements.place(c, "rt", "sid", "node-a"))
    assert not store.write(lambda c: placements.remove(c, "rt", "sid", node="node-b"))
    assert store.read(lambda c: placements.node_of(c, "rt", "sid")) == "node-a"
    assert store.write(lambda c: placements.remove(c, "rt", "sid", node="node-a"))
    assert store.read(lambda c: placements.node_of(c, "rt", "sid")) is None
    assert not store.write(lambda c: placements.remove(c, "rt", "sid"))


def test_a_dead_node_loses_exactly_its_bindings(store: Store) -> None:
    for i in range(3):
        store.write(lambda c, i=i: placements.place(c, "rt", f"a{i}", "node-a"))
    store.write(lambda c: placements.place(c, "rt", "b0", "node-b"))
    assert store.read(placements.counts) == {"node-a": 3, "node-b": 1}
    gone = store.write(lambda c: placements.remove_node(c, "node-a"))
    assert sorted(p.session_id for p in gone) == ["a0", "a1", "a2"]
    assert [(p.session_id, p.node) for p in store.read(placements.all_placements)] == [("b0", "node-b")]
    assert store.read(lambda c: placements.of_node(c, "node-a")) == []


def test_concurrent_placements_agree_on_one_node(store: Store) -> None:
    """Two gateways placing the same new session at once: both route to the one node that was recorded."""
    nodes = [f"node-{i}" for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: store.write(lambda c: placements.place(c, "rt", "race", n)), nodes))
    assert len(set(answers)) == 1
    assert answers[0] == store.read(lambda c: placements.node_of(c, "rt", "race"))
