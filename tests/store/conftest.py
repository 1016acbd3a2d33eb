"""Store tests run twice: on SQLite (WAL, the default) and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from hangar.store.engine import create_store_engine
from tests.support.postgres import postgres  # noqa: F401 - the session fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hangar.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    """An engine on an empty database (no migrations run)."""
    engine = create_store_engine(database_url)
    yield engine
    engine.dispose()
