"""Migrations stay linear and reversible, and produce exactly the tables ``store/tables.py`` declares."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from hangar.store.engine import alembic_config, migrate
from hangar.store.tables import metadata

CONTROL_TABLES = {
    "runtimes",
    "runtime_versions",
    "runtime_endpoints",
    "resource_tags",
    "idempotency_tokens",
    "control_secrets",
    "session_placements",
}


def test_one_head(bare_engine: Engine) -> None:
    heads = ScriptDirectory.from_config(alembic_config(bare_engine)).get_heads()
    assert len(heads) == 1, f"migrations must stay linear, found heads {heads}"


def test_upgrade_downgrade_upgrade(bare_engine: Engine) -> None:
    migrate(bare_engine)
    assert set(inspect(bare_engine).get_table_names()) >= CONTROL_TABLES
    command.downgrade(alembic_config(bare_engine), "base")
    assert not CONTROL_TABLES & set(inspect(bare_engine).get_table_names())
    migrate(bare_engine)
    assert set(inspect(bare_engine).get_table_names()) >= CONTROL_TABLES


def test_downgrade_to_0001_removes_only_the_control_plane(bare_engine: Engine) -> None:
    migrate(bare_engine)
    command.downgrade(alembic_config(bare_engine), "0001")
    names = set(inspect(bare_engine).get_table_names())
    assert "credentials" in names
    assert not CONTROL_TABLES & names


def test_migrations_match_the_table_definitions(bare_engine: Engine) -> None:
    migrate(bare_engine)
    with bare_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, metadata) if _is_control_plane(d)]
    assert differences == []


def _is_control_plane(diff: object) -> bool:
    text = repr(diff)
    return any(name in text for name in CONTROL_TABLES)
