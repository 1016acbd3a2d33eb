"""Control-plane repositories on SQLite and PostgreSQL: round trips, atomic use cases, cascades, concurrency."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hangar.domain.endpoint import Endpoint
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import Runtime, RuntimeSpec, Status, Version
from hangar.store import endpoints, idempotency, runtimes, tags
from hangar.store.engine import migrate
from hangar.store.transactions import Store, utcnow

SPEC = RuntimeSpec(
    artifact={
        "codeConfiguration": {
            "code": {"s3": {"bucket": "bkt", "prefix": "a/"}},
            "runtime": "PYTHON_3_11",
            "entryPoint": ["main.py"],
        }
    },
    role_arn="arn:aws:iam::123456789012:role/r",
    network={"networkMode": "PUBLIC"},
    lifecycle={"idleRuntimeSessionTimeout": 900, "maxLifetime": 28800},
    protocol={"serverProtocol": "HTTP"},
    description="ünïcode ✓",
    environment={"A": "1"},
)


@pytest.fixture
def store(bare_engine: Engine) -> Iterator[Store]:
    migrate(bare_engine)
    yield Store(bare_engine)


def _create(conn: Connection, runtime_id: str, name: str) -> None:
    now = utcnow()
    runtimes.insert_runtime(conn, Runtime(runtime_id, name, Status.CREATING, 1, now, now))
    runtimes.insert_version(conn, Version(runtime_id, 1, SPEC, Status.CREATING, now, now))
    endpoints.insert_endpoint(
        conn, Endpoint(runtime_id, "DEFAULT", f"DEFAULT-{runtime_id}", Status.CREATING, now, now, None, 1)
    )
    tags.put_tags(conn, runtime_id, None, {"team": "a"})


def test_round_trip(store: Store) -> None:
    store.write(lambda c: _create(c, "rt-abcdefghij", "rt"))
    version = store.read(lambda c: runtimes.get_version(c, "rt-abcdefghij", 1))
    assert version is not None and version.spec == SPEC and version.status == Status.CREATING
    assert version.created_at.tzinfo is not None
    prepared = PreparedVersion(Path("/v/code"), Path("/v/env"), ("main.py",), "h" * 64)
    ready = Version(version.runtime_id, 1, SPEC, Status.READY, version.created_at, utcnow(), None, prepared)
    store.write(lambda c: runtimes.save_version(c, ready))
    again = store.read(lambda c: runtimes.get_version(c, "rt-abcdefghij", 1))
    assert again is not None and again.prepared == prepared and again.status == Status.READY
    endpoint = store.read(lambda c: endpoints.get_endpoint(c, "rt-abcdefghij", "DEFAULT"))
    assert endpoint is not None and endpoint.target_version == 1 and endpoint.live_version is None


def test_a_failing_use_case_leaves_nothing(store: Store) -> None:
    def half_then_fail(conn: Connection) -> None:
        _create(conn, "rt-abcdefghij", "rt")
        raise RuntimeError("crash in the middle of a use case")

    with pytest.raises(RuntimeError):
        store.write(half_then_fail)
    assert store.read(lambda c: runtimes.get_runtime(c, "rt-abcdefghij")) is None
    assert store.read(lambda c: runtimes.get_version(c, "rt-abcdefghij", 1)) is None
    assert store.read(lambda c: endpoints.endpoints_of(c, "rt-abcdefghij")) == []


def test_deleting_a_runtime_removes_versions_endpoints_and_tags(store: Store) -> None:
    store.write(lambda c: _create(c, "rt-abcdefghij", "rt"))
    store.write(lambda c: runtimes.delete_runtime(c, "rt-abcdefghij"))
    assert store.read(lambda c: runtimes.get_version(c, "rt-abcdefghij", 1)) is None
    assert store.read(lambda c: endpoints.endpoints_of(c, "rt-abcdefghij")) == []
    assert store.read(lambda c: tags.get_tags(c, "rt-abcdefghij", None)) == {}


def test_names_are_unique(store: Store) -> None:
    store.write(lambda c: _create(c, "rt-abcdefghij", "rt"))
    with pytest.raises(IntegrityError, match=r"(?i)unique|duplicate"):
        store.write(lambda c: _create(c, "rt-0123456789", "rt"))


def test_keyset_listing(store: Store) -> None:
    ids = [f"rt{i}-abcdefghij" for i in range(5)]
    for index, runtime_id in enumerate(ids):
        store.write(lambda c, r=runtime_id, i=index: _create(c, r, f"rt{i}"))
    first = store.read(lambda c: runtimes.list_runtimes(c, after=None, limit=2))
    rest = store.read(lambda c: runtimes.list_runtimes(c, after=first[-1].runtime_id, limit=10))
    assert [r.runtime_id for r in first + rest] == sorted(ids)


def test_secret_first_writer_wins(store: Store) -> None:
    first = store.write(lambda c: idempotency.secret(c, "k", "one"))
    second = store.write(lambda c: idempotency.secret(c, "k", "two"))
    assert first == second == "one"


def test_concurrent_writers_all_commit(store: Store) -> None:
    """Eight threads creating runtimes at once: every write lands (SQLite: one writer at a time, retried)."""

    def create(index: int) -> None:
        store.write(lambda c: _create(c, f"c{index}-abcdefghij", f"c{index}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(24)))
    assert len(store.read(lambda c: runtimes.list_runtimes(c, after=None, limit=100))) == 24
