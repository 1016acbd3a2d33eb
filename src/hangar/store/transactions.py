"""One transaction per use case.

``Store.write(fn)`` runs ``fn(connection)`` inside one transaction and commits only when it returns, so a crash
(SIGKILL included) leaves either all of a use case's rows or none. Within one process writes are serialized by a
lock, the way SQLite wants a single writer; a write that still meets a lock held by another process is retried
from the start a bounded number of times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

_LOCK_RETRIES = 20
_LOCK_BACKOFF_S = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_lock = threading.Lock()
        self.is_sqlite = engine.dialect.name == "sqlite"

    def write(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(_LOCK_RETRIES):
            try:
                with self._write_lock, self.engine.begin() as connection:
                    return fn(connection)
            except OperationalError as exc:
                if not self.is_sqlite or "locked" not in str(exc.orig) or attempt == _LOCK_RETRIES - 1:
                    raise
            time.sleep(_LOCK_BACKOFF_S * (attempt + 1))
        raise RuntimeError("unreachable: the retry loop either returns or raises")

    def read(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection:
            return fn(connection)
