"""Rows of ``runtimes`` and ``runtime_versions`` ↔ domain ``Runtime`` and ``Version``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from hangar.domain.invocation import ImageConfig, PreparedVersion
from hangar.domain.runtime import Runtime, RuntimeSpec, Status, Version
from hangar.store.tables import runtime_versions, runtimes
from hangar.store.transactions import as_utc


def _runtime(row: Any) -> Runtime:
    return Runtime(
        runtime_id=row.runtime_id,
        name=row.name,
        status=Status(row.status),
        latest_version=row.latest_version,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        failure_reason=row.failure_reason,
    )


def _version(row: Any) -> Version:
    prepared = None
    if row.code_dir is not None and row.env_dir is not None:
        prepared = PreparedVersion(
            code_dir=Path(row.code_dir),
            env_dir=Path(row.env_dir),
            entry_point=tuple(row.entry_point or ()),
            content_hash=row.content_hash or "",
            image=_image(row.image),
        )
    return Version(
        runtime_id=row.runtime_id,
        number=row.version,
        spec=RuntimeSpec.from_json(row.spec),
        status=Status(row.status),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        failure_reason=row.failure_reason,
        prepared=prepared,
    )


def insert_runtime(conn: Connection, runtime: Runtime) -> None:
    conn.execute(
        insert(runtimes).values(
            runtime_id=runtime.runtime_id,
            name=runtime.name,
            status=runtime.status.value,
            failure_reason=runtime.failure_reason,
            latest_version=runtime.latest_version,
            created_at=runtime.created_at,
            updated_at=runtime.updated_at,
        )
    )


def get_runtime(conn: Connection, runtime_id: str, *, for_update: bool = False) -> Runtime | None:
    query = select(runtimes).where(runtimes.c.runtime_id == runtime_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _runtime(row)


def name_taken(conn: Connection, name: str) -> bool:
    return conn.execute(select(runtimes.c.runtime_id).where(runtimes.c.name == name)).first() is not None


def save_runtime(conn: Connection, runtime: Runtime) -> None:
    conn.execute(
        update(runtimes)
        .where(runtimes.c.runtime_id == runtime.runtime_id)
        .values(
            status=runtime.status.value,
            failure_reason=runtime.failure_reason,
            latest_version=runtime.latest_version,
            updated_at=runtime.updated_at,
        )
    )


def delete_runtime(conn: Connection, runtime_id: str) -> None:
    conn.execute(delete(runtimes).where(runtimes.c.runtime_id == runtime_id))


def list_runtimes(conn: Connection, *, after: str | None, limit: int) -> list[Runtime]:
    query = select(runtimes).order_by(runtimes.c.runtime_id).limit(limit)
    if after is not None:
        query = query.where(runtimes.c.runtime_id > after)
    return [_runtime(row) for row in conn.execute(query)]


def runtimes_in(conn: Connection, statuses: set[Status]) -> list[Runtime]:
    query = select(runtimes).where(runtimes.c.status.in_([s.value for s in statuses]))
    return [_runtime(row) for row in conn.execute(query)]


def insert_version(conn: Connection, version: Version) -> None:
    conn.execute(
        insert(runtime_versions).values(
            runtime_id=version.runtime_id,
            version=version.number,
            spec=version.spec.to_json(),
            status=version.status.value,
            failure_reason=version.failure_reason,
            created_at=version.created_at,
            updated_at=version.updated_at,
        )
    )


def get_version(conn: Connection, runtime_id: str, number: int) -> Version | None:
    row = conn.execute(
        select(runtime_versions).where(
            and_(runtime_versions.c.runtime_id == runtime_id, runtime_versions.c.version == number)
        )
    ).first()
    return None if row is None else _version(row)


def newest_version(conn: Connection, runtime_id: str) -> Version | None:
    """The highest-numbered version that is not being deleted."""
    number = conn.execute(
        select(func.max(runtime_versions.c.version)).where(
            and_(runtime_versions.c.runtime_id == runtime_id, runtime_versions.c.status != Status.DELETING.value)
        )
    ).scalar()
    return None if number is None else get_version(conn, runtime_id, number)


def newest_versions(conn: Connection, runtime_ids: list[str]) -> dict[str, Version]:
    """``newest_version`` for many runtimes in one query (a page of ListAgentRuntimes)."""
    if not runtime_ids:
        return {}
    newest = (
        select(runtime_versions.c.runtime_id, func.max(runtime_versions.c.version).label("version"))
        .where(
            and_(
                runtime_versions.c.runtime_id.in_(runtime_ids),
                runtime_versions.c.status != Status.DELETING.value,
            )
        )
        .group_by(runtime_versions.c.runtime_id)
        .subquery()
    )
    query = select(runtime_versions).join(
        newest,
        and_(runtime_versions.c.runtime_id == newest.c.runtime_id, runtime_versions.c.version == newest.c.version),
    )
    return {row.runtime_id: _version(row) for row in conn.execute(query)}


def save_version(conn: Connection, version: Version) -> None:
    """Status, failure and prepared environment: the only parts of a version that ever change."""
    prepared = version.prepared
    conn.execute(
        update(runtime_versions)
        .where(
            and_(
                runtime_versions.c.runtime_id == version.runtime_id,
                runtime_versions.c.version == version.number,
            )
        )
        .values(
            status=version.status.value,
            failure_reason=version.failure_reason,
            updated_at=version.updated_at,
            code_dir=None if prepared is None else str(prepared.code_dir),
            env_dir=None if prepared is None else str(prepared.env_dir),
            entry_point=None if prepared is None else list(prepared.entry_point),
            content_hash=None if prepared is None else prepared.content_hash,
            image=None if prepared is None or prepared.image is None else _image_json(prepared.image),
        )
    )


def _image_json(image: ImageConfig) -> dict[str, Any]:
    return {
        "rootfs": str(image.rootfs),
        "manifestDigest": image.manifest_digest,
        "reference": image.reference,
        "architecture": image.architecture,
        "entrypoint": list(image.entrypoint),
        "cmd": list(image.cmd),
        "env": [list(pair) for pair in image.env],
        "workingDir": image.working_dir,
        "user": image.user,
        "exposedPorts": list(image.exposed_ports),
        "layers": list(image.layers),
    }


def _image(value: dict[str, Any] | None) -> ImageConfig | None:
    if not value:
        return None
    return ImageConfig(
        rootfs=Path(value["rootfs"]),
        manifest_digest=value["manifestDigest"],
        reference=value["reference"],
        architecture=value["architecture"],
        entrypoint=tuple(value.get("entrypoint", ())),
        cmd=tuple(value.get("cmd", ())),
        env=tuple((name, val) for name, val in value.get("env", ())),
        working_dir=value.get("workingDir", "/"),
        user=value.get("user", ""),
        exposed_ports=tuple(value.get("exposedPorts", ())),
        layers=tuple(value.get("layers", ())),
    )


def delete_version(conn: Connection, runtime_id: str, number: int) -> None:
    conn.execute(
        delete(runtime_versions).where(
            and_(runtime_versions.c.runtime_id == runtime_id, runtime_versions.c.version == number)
        )
    )


def list_versions(conn: Connection, runtime_id: str, *, after: int | None, limit: int) -> list[Version]:
    query = (
        select(runtime_versions)
        .where(runtime_versions.c.runtime_id == runtime_id)
        .order_by(runtime_versions.c.version)
        .limit(limit)
    )
    if after is not None:
        query = query.where(runtime_versions.c.version > after)
    return [_version(row) for row in conn.execute(query)]


def versions_in(conn: Connection, statuses: set[Status]) -> list[Version]:
    query = (
        select(runtime_versions)
        .where(runtime_versions.c.status.in_([s.value for s in statuses]))
        .order_by(runtime_versions.c.updated_at)
    )
    return [_version(row) for row in conn.execute(query)]
