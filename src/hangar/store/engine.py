"""Open the store and bring its schema to the newest migration.

SQLite runs in WAL mode with a busy timeout so readers never block the single writer; PostgreSQL is used as
given. Migrations run at every start (idempotent), so an upgraded Hangar upgrades its own database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url`` with the pragmas Hangar relies on (no migrations)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql") and "+" not in url.split("://", 1)[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:  # psycopg is an optional extra
        raise RuntimeError("PostgreSQL needs the driver: pip install 'hangar-runtime[postgres]'") from exc


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def open_engine(url: str) -> Engine:
    """Engine for ``url`` with its schema upgraded to the newest migration."""
    engine = create_store_engine(url)
    migrate(engine)
    return engine
