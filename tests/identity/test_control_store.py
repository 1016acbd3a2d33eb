"""Migration 0003 on SQLite and PostgreSQL: it produces exactly the identity tables of ``store/tables.py``, gives
runtimes made before it their workload identity, goes away cleanly, and a runtime's identity goes with the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, delete, insert, inspect, select

from hangar.store import identity as rows
from hangar.store.engine import alembic_config, create_store_engine, migrate
from hangar.store.tables import metadata, runtimes, workload_identities
from tests.support.postgres import postgres  # noqa: F401 - the session fixture

IDENTITY_TABLES = {"workload_identities", "api_key_providers", "oauth2_providers", "identity_tags"}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hangar.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def test_identity_tables_match_their_definitions(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, metadata) if any(t in repr(d) for t in IDENTITY_TABLES)]
    assert differences == []


def test_existing_runtimes_get_their_workload_identity_and_lose_it_with_the_runtime(engine: Engine) -> None:
    migrate(engine, "0002")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(runtimes).values(
                runtime_id="old_agent-abcdefghij",
                name="old_agent",
                status="READY",
                latest_version=1,
                created_at=now,
                updated_at=now,
            )
        )
    migrate(engine)
    with engine.begin() as conn:
        found = rows.get_workload(conn, "old_agent-abcdefghij")
        assert found is not None and found.runtime_id == "old_agent-abcdefghij" and found.allowed_return_urls == ()
        conn.execute(delete(runtimes).where(runtimes.c.runtime_id == "old_agent-abcdefghij"))
    with engine.connect() as conn:
        assert conn.execute(select(workload_identities)).first() is None  # ON DELETE CASCADE

    command.downgrade(alembic_config(engine), "0002")
    assert not IDENTITY_TABLES & set(inspect(engine).get_table_names())
    assert "runtimes" in inspect(engine).get_table_names()
