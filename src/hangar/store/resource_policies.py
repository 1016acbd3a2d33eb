"""Rows of ``resource_policies``: the policy of a runtime (endpoint_name "") or of one of its endpoints."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, select, update

from hangar.store.tables import resource_policies


def _where(runtime_id: str, endpoint_name: str | None) -> ColumnElement[bool]:
    return and_(
        resource_policies.c.runtime_id == runtime_id, resource_policies.c.endpoint_name == (endpoint_name or "")
    )


def get_policy(conn: Connection, runtime_id: str, endpoint_name: str | None) -> str | None:
    found: str | None = conn.execute(
        select(resource_policies.c.policy).where(_where(runtime_id, endpoint_name))
    ).scalar()
    return found


def policies_of(conn: Connection, runtime_id: str, endpoint_name: str) -> dict[str, str]:
    """The runtime's policy (key "") and the endpoint's (key ``endpoint_name``), those that exist."""
    rows = conn.execute(
        select(resource_policies.c.endpoint_name, resource_policies.c.policy).where(
            and_(
                resource_policies.c.runtime_id == runtime_id,
                resource_policies.c.endpoint_name.in_(["", endpoint_name]),
            )
        )
    )
    return {row.endpoint_name: row.policy for row in rows}


def put_policy(conn: Connection, runtime_id: str, endpoint_name: str | None, policy: str, now: datetime) -> None:
    if get_policy(conn, runtime_id, endpoint_name) is None:
        conn.execute(
            insert(resource_policies).values(
                runtime_id=runtime_id, endpoint_name=endpoint_name or "", policy=policy, updated_at=now
            )
        )
    else:
        conn.execute(
            update(resource_policies).where(_where(runtime_id, endpoint_name)).values(policy=policy, updated_at=now)
        )


def delete_policy(conn: Connection, runtime_id: str, endpoint_name: str | None) -> bool:
    return conn.execute(delete(resource_policies).where(_where(runtime_id, endpoint_name))).rowcount > 0
