"""Rows of ``resource_tags``: tags of a runtime (endpoint_name "") or of one of its endpoints."""

from __future__ import annotations

from sqlalchemy import Connection, and_, delete, insert, select

from hangar.store.tables import resource_tags


def get_tags(conn: Connection, runtime_id: str, endpoint_name: str | None) -> dict[str, str]:
    rows = conn.execute(
        select(resource_tags.c.key, resource_tags.c.value).where(
            and_(resource_tags.c.runtime_id == runtime_id, resource_tags.c.endpoint_name == (endpoint_name or ""))
        )
    )
    return {row.key: row.value for row in rows}


def put_tags(conn: Connection, runtime_id: str, endpoint_name: str | None, tags: dict[str, str]) -> None:
    """Add or overwrite ``tags`` (TagResource semantics)."""
    if not tags:
        return
    remove_tags(conn, runtime_id, endpoint_name, list(tags))
    conn.execute(
        insert(resource_tags),
        [
            {"runtime_id": runtime_id, "endpoint_name": endpoint_name or "", "key": key, "value": value}
            for key, value in tags.items()
        ],
    )


def remove_tags(conn: Connection, runtime_id: str, endpoint_name: str | None, keys: list[str]) -> None:
    conn.execute(
        delete(resource_tags).where(
            and_(
                resource_tags.c.runtime_id == runtime_id,
                resource_tags.c.endpoint_name == (endpoint_name or ""),
                resource_tags.c.key.in_(keys),
            )
        )
    )


def drop_tags(conn: Connection, runtime_id: str, endpoint_name: str) -> None:
    """Every tag of one endpoint (it is being removed; a new endpoint of that name starts untagged)."""
    conn.execute(
        delete(resource_tags).where(
            and_(resource_tags.c.runtime_id == runtime_id, resource_tags.c.endpoint_name == endpoint_name)
        )
    )
