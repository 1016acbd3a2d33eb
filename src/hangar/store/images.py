"""Rows of Hangar's registry: repositories, the manifests pushed to them, and tags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update

from hangar.store.tables import image_manifests, image_repositories, image_tags, runtime_versions
from hangar.store.transactions import as_utc


@dataclass(frozen=True)
class RepositoryRow:
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ManifestRow:
    repository: str
    digest: str
    media_type: str
    artifact_type: str | None
    subject: str | None
    size: int
    image_size: int
    pushed_at: datetime
    tags: tuple[str, ...] = ()


def create_repository(conn: Connection, name: str, now: datetime) -> RepositoryRow:
    conn.execute(insert(image_repositories).values(name=name, created_at=now))
    return RepositoryRow(name, now)


def get_repository(conn: Connection, name: str) -> RepositoryRow | None:
    row = conn.execute(select(image_repositories).where(image_repositories.c.name == name)).first()
    return None if row is None else RepositoryRow(row.name, as_utc(row.created_at))


def list_repositories(conn: Connection, names: list[str] | None = None) -> list[RepositoryRow]:
    query = select(image_repositories).order_by(image_repositories.c.name)
    if names is not None:
        query = query.where(image_repositories.c.name.in_(names))
    return [RepositoryRow(row.name, as_utc(row.created_at)) for row in conn.execute(query)]


def delete_repository(conn: Connection, name: str) -> None:
    conn.execute(delete(image_tags).where(image_tags.c.repository == name))
    conn.execute(delete(image_manifests).where(image_manifests.c.repository == name))
    conn.execute(delete(image_repositories).where(image_repositories.c.name == name))


def count_manifests(conn: Connection, repository: str) -> int:
    query = select(func.count()).select_from(image_manifests).where(image_manifests.c.repository == repository)
    return int(conn.execute(query).scalar_one())


def put_manifest(conn: Connection, row: ManifestRow) -> None:
    """Record a manifest (pushing the same digest again only refreshes nothing: manifests are immutable)."""
    if get_manifest(conn, row.repository, row.digest) is not None:
        return
    conn.execute(
        insert(image_manifests).values(
            repository=row.repository,
            digest=row.digest,
            media_type=row.media_type,
            artifact_type=row.artifact_type,
            subject=row.subject,
            size=row.size,
            image_size=row.image_size,
            pushed_at=row.pushed_at,
        )
    )


def _manifest(row: Row[Any], tags: tuple[str, ...] = ()) -> ManifestRow:
    return ManifestRow(
        repository=row.repository,
        digest=row.digest,
        media_type=row.media_type,
        artifact_type=row.artifact_type,
        subject=row.subject,
        size=row.size,
        image_size=row.image_size,
        pushed_at=as_utc(row.pushed_at),
        tags=tags,
    )


def get_manifest(conn: Connection, repository: str, digest: str) -> ManifestRow | None:
    row = conn.execute(
        select(image_manifests).where(
            and_(image_manifests.c.repository == repository, image_manifests.c.digest == digest)
        )
    ).first()
    return None if row is None else _manifest(row)


def list_manifests(conn: Connection, repository: str) -> list[ManifestRow]:
    tags: dict[str, list[str]] = {}
    for row in conn.execute(select(image_tags).where(image_tags.c.repository == repository)):
        tags.setdefault(row.digest, []).append(row.tag)
    query = select(image_manifests).where(image_manifests.c.repository == repository)
    rows = conn.execute(query.order_by(image_manifests.c.pushed_at, image_manifests.c.digest))
    return [_manifest(row, tuple(sorted(tags.get(row.digest, ())))) for row in rows]


def all_manifest_digests(conn: Connection) -> set[str]:
    return {row.digest for row in conn.execute(select(image_manifests.c.digest))}


def delete_manifest(conn: Connection, repository: str, digest: str) -> None:
    conn.execute(delete(image_tags).where(and_(image_tags.c.repository == repository, image_tags.c.digest == digest)))
    conn.execute(
        delete(image_manifests).where(
            and_(image_manifests.c.repository == repository, image_manifests.c.digest == digest)
        )
    )


def resolve_tag(conn: Connection, repository: str, tag: str) -> str | None:
    row = conn.execute(
        select(image_tags.c.digest).where(and_(image_tags.c.repository == repository, image_tags.c.tag == tag))
    ).first()
    return None if row is None else row.digest


def set_tag(conn: Connection, repository: str, tag: str, digest: str, now: datetime) -> None:
    values = {"digest": digest, "updated_at": now}
    where = and_(image_tags.c.repository == repository, image_tags.c.tag == tag)
    if conn.execute(update(image_tags).where(where).values(**values)).rowcount == 0:
        conn.execute(insert(image_tags).values(repository=repository, tag=tag, **values))


def delete_tag(conn: Connection, repository: str, tag: str) -> None:
    conn.execute(delete(image_tags).where(and_(image_tags.c.repository == repository, image_tags.c.tag == tag)))


def list_tags(conn: Connection, repository: str) -> list[str]:
    query = select(image_tags.c.tag).where(image_tags.c.repository == repository).order_by(image_tags.c.tag)
    return [row.tag for row in conn.execute(query)]


def version_images(conn: Connection) -> list[dict[str, Any]]:
    """The image of every version that has one (what garbage collection must keep)."""
    rows = conn.execute(select(runtime_versions.c.image).where(runtime_versions.c.image.is_not(None)))
    return [row.image for row in rows if row.image]
