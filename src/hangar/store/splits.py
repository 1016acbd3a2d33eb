"""Rows of ``endpoint_splits`` ↔ domain ``Split`` (Hangar's traffic split of an endpoint)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, select

from hangar.domain.split import Split
from hangar.store.tables import endpoint_splits
from hangar.store.transactions import utcnow


def _where(runtime_id: str, endpoint_name: str) -> ColumnElement[bool]:
    return and_(endpoint_splits.c.runtime_id == runtime_id, endpoint_splits.c.endpoint_name == endpoint_name)


def get_split(conn: Connection, runtime_id: str, endpoint_name: str) -> Split | None:
    row = conn.execute(select(endpoint_splits).where(_where(runtime_id, endpoint_name))).first()
    if row is None:
        return None
    return Split(base_version=row.base_version, weights=tuple((int(v), int(w)) for v, w in row.weights))


def put_split(conn: Connection, runtime_id: str, endpoint_name: str, split: Split) -> None:
    conn.execute(delete(endpoint_splits).where(_where(runtime_id, endpoint_name)))
    conn.execute(
        insert(endpoint_splits).values(
            runtime_id=runtime_id,
            endpoint_name=endpoint_name,
            base_version=split.base_version,
            weights=[list(pair) for pair in split.weights],
            updated_at=utcnow(),
        )
    )


def delete_split(conn: Connection, runtime_id: str, endpoint_name: str) -> bool:
    return bool(conn.execute(delete(endpoint_splits).where(_where(runtime_id, endpoint_name))).rowcount)
