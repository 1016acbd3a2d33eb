"""Client tokens: the answer a write gave, kept so that a retry with the same token gets the same answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from hangar.store.tables import control_secrets, idempotency_tokens


@dataclass(frozen=True)
class Remembered:
    request_hash: str
    response: dict[str, Any]


def recall(conn: Connection, operation: str, token: str) -> Remembered | None:
    row = conn.execute(
        select(idempotency_tokens.c.request_hash, idempotency_tokens.c.response).where(
            and_(idempotency_tokens.c.operation == operation, idempotency_tokens.c.client_token == token)
        )
    ).first()
    return None if row is None else Remembered(row.request_hash, row.response)


def remember(
    conn: Connection, operation: str, token: str, request_hash: str, response: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(idempotency_tokens).values(
            operation=operation, client_token=token, request_hash=request_hash, response=response, created_at=now
        )
    )


def forget_before(conn: Connection, cutoff: datetime) -> None:
    conn.execute(delete(idempotency_tokens).where(idempotency_tokens.c.created_at < cutoff))


def secret(conn: Connection, name: str, make: str) -> str:
    """The secret called ``name``, created as ``make`` on first use (first writer wins)."""
    row = conn.execute(select(control_secrets.c.value).where(control_secrets.c.name == name)).first()
    if row is not None:
        value: str = row.value
        return value
    conn.execute(insert(control_secrets).values(name=name, value=make))
    return make
