"""Rows of ``session_placements``: the cluster node serving each live session (issue 16).

Every gateway reads and writes the same rows, so the first placement of a session id wins (put-if-absent) and any
gateway routes that session's later calls to its node. A row goes when its session ends or its node dies; a removal
can name the node it expects, so a late cleanup never drops a newer placement of the same id on another node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from hangar.store.tables import session_placements
from hangar.store.transactions import as_utc, utcnow

_T = session_placements


@dataclass(frozen=True)
class Placement:
    runtime_id: str
    session_id: str
    node: str
    created_at: datetime


def _key(runtime_id: str, session_id: str) -> ColumnElement[bool]:
    return and_(_T.c.runtime_id == runtime_id, _T.c.session_id == session_id)


def place(conn: Connection, runtime_id: str, session_id: str, node: str) -> str:
    """Bind the session to ``node`` unless it is bound already; the node it is bound to now (the winner's)."""
    values = {"runtime_id": runtime_id, "session_id": session_id, "node": node, "created_at": utcnow()}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_T).values(**values)
    conn.execute(statement.on_conflict_do_nothing(index_elements=["runtime_id", "session_id"]))
    bound = node_of(conn, runtime_id, session_id)
    return bound if bound is not None else node


def node_of(conn: Connection, runtime_id: str, session_id: str) -> str | None:
    return conn.execute(select(_T.c.node).where(_key(runtime_id, session_id))).scalar_one_or_none()


def remove(conn: Connection, runtime_id: str, session_id: str, node: str | None = None) -> bool:
    """Drop the binding (only if it is still on ``node`` when one is named); True when a row went."""
    where = _key(runtime_id, session_id)
    if node is not None:
        where = and_(where, _T.c.node == node)
    return bool(conn.execute(delete(_T).where(where)).rowcount)


def remove_seen(conn: Connection, seen: Placement) -> bool:
    """Drop the binding only if it is still the very row seen (same node, same creation time): a session stopped and
    placed again since keeps its new row. True when the row went."""
    where = and_(_key(seen.runtime_id, seen.session_id), _T.c.node == seen.node)
    created: datetime | None = conn.execute(select(_T.c.created_at).where(where)).scalar_one_or_none()
    if created is None or as_utc(created) != seen.created_at:
        return False
    return bool(conn.execute(delete(_T).where(where)).rowcount)


def remove_node(conn: Connection, node: str) -> list[Placement]:
    """Drop every binding of a node (it died or was cleaned up); the bindings that went."""
    gone = of_node(conn, node)
    conn.execute(delete(_T).where(_T.c.node == node))
    return gone


def of_node(conn: Connection, node: str) -> list[Placement]:
    rows = conn.execute(select(_T).where(_T.c.node == node).order_by(_T.c.created_at)).all()
    return [_placement(row) for row in rows]


def all_placements(conn: Connection) -> list[Placement]:
    rows = conn.execute(select(_T).order_by(_T.c.created_at)).all()
    return [_placement(row) for row in rows]


def counts(conn: Connection) -> dict[str, int]:
    """Bound sessions per node."""
    rows = conn.execute(select(_T.c.node, func.count().label("n")).group_by(_T.c.node)).all()
    return {str(row.node): int(row.n) for row in rows}


def _placement(row: Row[Any]) -> Placement:
    return Placement(row.runtime_id, row.session_id, row.node, as_utc(row.created_at))
