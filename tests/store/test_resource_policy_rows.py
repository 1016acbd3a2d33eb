"""Rows of ``resource_policies`` on SQLite and PostgreSQL: put/replace, the pair a call reads, delete, cascade."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, func, select

from hangar.domain.runtime import Runtime, Status
from hangar.store import resource_policies as rows
from hangar.store import runtimes
from hangar.store.engine import migrate
from hangar.store.tables import resource_policies
from hangar.store.transactions import Store, utcnow

RID = "rt-policyAAAA"


@pytest.fixture
def store(bare_engine: Engine) -> Iterator[Store]:
    migrate(bare_engine)
    store = Store(bare_engine)
    now = utcnow()
    store.write(lambda c: runtimes.insert_runtime(c, Runtime(RID, "rt", Status.READY, 1, now, now)))
    yield store


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(resource_policies)).scalar_one())


def test_put_replace_read_delete_and_cascade(store: Store) -> None:
    store.write(lambda c: rows.put_policy(c, RID, None, '{"v": 1}', utcnow()))
    store.write(lambda c: rows.put_policy(c, RID, None, '{"v": 2}', utcnow()))  # replaced, not added
    store.write(lambda c: rows.put_policy(c, RID, "DEFAULT", '{"e": 1}', utcnow()))
    store.write(lambda c: rows.put_policy(c, RID, "other", '{"o": 1}', utcnow()))
    assert store.read(lambda c: rows.get_policy(c, RID, None)) == '{"v": 2}'
    assert store.read(lambda c: rows.policies_of(c, RID, "DEFAULT")) == {"": '{"v": 2}', "DEFAULT": '{"e": 1}'}
    assert store.write(lambda c: rows.delete_policy(c, RID, "other")) is True
    assert store.write(lambda c: rows.delete_policy(c, RID, "other")) is False
    assert store.read(lambda c: rows.get_policy(c, RID, "other")) is None
    store.write(lambda c: runtimes.delete_runtime(c, RID))  # the runtime's policies go with it
    assert store.read(_count) == 0
