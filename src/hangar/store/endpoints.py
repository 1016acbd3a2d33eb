"""Rows of ``runtime_endpoints`` ↔ domain ``Endpoint``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from hangar.domain.endpoint import Endpoint
from hangar.domain.runtime import Status
from hangar.store.tables import runtime_endpoints
from hangar.store.transactions import as_utc


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        runtime_id=row.runtime_id,
        name=row.name,
        endpoint_id=row.endpoint_id,
        status=Status(row.status),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        live_version=row.live_version,
        target_version=row.target_version,
        description=row.description,
        failure_reason=row.failure_reason,
    )


def _values(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "status": endpoint.status.value,
        "live_version": endpoint.live_version,
        "target_version": endpoint.target_version,
        "description": endpoint.description,
        "failure_reason": endpoint.failure_reason,
        "updated_at": endpoint.updated_at,
    }


def insert_endpoint(conn: Connection, endpoint: Endpoint) -> None:
    conn.execute(
        insert(runtime_endpoints).values(
            runtime_id=endpoint.runtime_id,
            name=endpoint.name,
            endpoint_id=endpoint.endpoint_id,
            created_at=endpoint.created_at,
            **_values(endpoint),
        )
    )


def save_endpoint(conn: Connection, endpoint: Endpoint) -> None:
    conn.execute(
        update(runtime_endpoints)
        .where(and_(runtime_endpoints.c.runtime_id == endpoint.runtime_id, runtime_endpoints.c.name == endpoint.name))
        .values(**_values(endpoint))
    )


def get_endpoint(conn: Connection, runtime_id: str, name: str) -> Endpoint | None:
    row = conn.execute(
        select(runtime_endpoints).where(
            and_(runtime_endpoints.c.runtime_id == runtime_id, runtime_endpoints.c.name == name)
        )
    ).first()
    return None if row is None else _endpoint(row)


def delete_endpoint(conn: Connection, runtime_id: str, name: str) -> None:
    conn.execute(
        delete(runtime_endpoints).where(
            and_(runtime_endpoints.c.runtime_id == runtime_id, runtime_endpoints.c.name == name)
        )
    )


def endpoints_of(
    conn: Connection, runtime_id: str, *, after: str | None = None, limit: int | None = None
) -> list[Endpoint]:
    query = (
        select(runtime_endpoints).where(runtime_endpoints.c.runtime_id == runtime_id).order_by(runtime_endpoints.c.name)
    )
    if after is not None:
        query = query.where(runtime_endpoints.c.name > after)
    if limit is not None:
        query = query.limit(limit)
    return [_endpoint(row) for row in conn.execute(query)]


def endpoints_in(conn: Connection, statuses: set[Status]) -> list[Endpoint]:
    query = select(runtime_endpoints).where(runtime_endpoints.c.status.in_([s.value for s in statuses]))
    return [_endpoint(row) for row in conn.execute(query)]
