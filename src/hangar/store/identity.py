"""Rows of the identity tables: workload identities, API-key and OAuth2 providers (secrets stay sealed), tags.

Nothing here decrypts: sealed columns go in and out as the vault's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from hangar.store.tables import api_key_providers, identity_tags, oauth2_providers, workload_identities
from hangar.store.transactions import as_utc


@dataclass(frozen=True)
class WorkloadRow:
    name: str
    allowed_return_urls: tuple[str, ...]
    runtime_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApiKeyRow:
    name: str
    api_key_sealed: bytes
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OAuth2Row:
    name: str
    vendor: str
    config: dict[str, Any]
    client_secret_sealed: bytes | None
    created_at: datetime
    updated_at: datetime


def _workload(row: Any) -> WorkloadRow:
    return WorkloadRow(
        row.name, tuple(row.allowed_return_urls or ()), row.runtime_id, as_utc(row.created_at), as_utc(row.updated_at)
    )


def _api_key(row: Any) -> ApiKeyRow:
    return ApiKeyRow(row.name, bytes(row.api_key_sealed), as_utc(row.created_at), as_utc(row.updated_at))


def _oauth2(row: Any) -> OAuth2Row:
    sealed = bytes(row.client_secret_sealed) if row.client_secret_sealed is not None else None
    return OAuth2Row(row.name, row.vendor, dict(row.config), sealed, as_utc(row.created_at), as_utc(row.updated_at))


# -- workload identities ---------------------------------------------------------------------------------------


def insert_workload(conn: Connection, row: WorkloadRow) -> None:
    conn.execute(
        insert(workload_identities).values(
            name=row.name,
            allowed_return_urls=list(row.allowed_return_urls),
            runtime_id=row.runtime_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    )


def get_workload(conn: Connection, name: str) -> WorkloadRow | None:
    row = conn.execute(select(workload_identities).where(workload_identities.c.name == name)).first()
    return None if row is None else _workload(row)


def update_workload(conn: Connection, name: str, urls: tuple[str, ...], now: datetime) -> None:
    conn.execute(
        update(workload_identities)
        .where(workload_identities.c.name == name)
        .values(allowed_return_urls=list(urls), updated_at=now)
    )


def delete_workload(conn: Connection, name: str) -> None:
    conn.execute(delete(workload_identities).where(workload_identities.c.name == name))


def list_workloads(conn: Connection, *, after: str | None, limit: int) -> list[WorkloadRow]:
    query = select(workload_identities).order_by(workload_identities.c.name).limit(limit)
    if after is not None:
        query = query.where(workload_identities.c.name > after)
    return [_workload(row) for row in conn.execute(query)]


# -- API-key providers -----------------------------------------------------------------------------------------


def insert_api_key(conn: Connection, row: ApiKeyRow) -> None:
    conn.execute(
        insert(api_key_providers).values(
            name=row.name, api_key_sealed=row.api_key_sealed, created_at=row.created_at, updated_at=row.updated_at
        )
    )


def get_api_key(conn: Connection, name: str) -> ApiKeyRow | None:
    row = conn.execute(select(api_key_providers).where(api_key_providers.c.name == name)).first()
    return None if row is None else _api_key(row)


def update_api_key(conn: Connection, name: str, sealed: bytes, now: datetime) -> None:
    conn.execute(
        update(api_key_providers).where(api_key_providers.c.name == name).values(api_key_sealed=sealed, updated_at=now)
    )


def delete_api_key(conn: Connection, name: str) -> None:
    conn.execute(delete(api_key_providers).where(api_key_providers.c.name == name))


def list_api_keys(conn: Connection, *, after: str | None, limit: int) -> list[ApiKeyRow]:
    query = select(api_key_providers).order_by(api_key_providers.c.name).limit(limit)
    if after is not None:
        query = query.where(api_key_providers.c.name > after)
    return [_api_key(row) for row in conn.execute(query)]


# -- OAuth2 providers ------------------------------------------------------------------------------------------


def insert_oauth2(conn: Connection, row: OAuth2Row) -> None:
    conn.execute(
        insert(oauth2_providers).values(
            name=row.name,
            vendor=row.vendor,
            config=row.config,
            client_secret_sealed=row.client_secret_sealed,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    )


def get_oauth2(conn: Connection, name: str) -> OAuth2Row | None:
    row = conn.execute(select(oauth2_providers).where(oauth2_providers.c.name == name)).first()
    return None if row is None else _oauth2(row)


def update_oauth2(conn: Connection, row: OAuth2Row) -> None:
    conn.execute(
        update(oauth2_providers)
        .where(oauth2_providers.c.name == row.name)
        .values(
            vendor=row.vendor,
            config=row.config,
            client_secret_sealed=row.client_secret_sealed,
            updated_at=row.updated_at,
        )
    )


def delete_oauth2(conn: Connection, name: str) -> None:
    conn.execute(delete(oauth2_providers).where(oauth2_providers.c.name == name))


def list_oauth2(conn: Connection, *, after: str | None, limit: int) -> list[OAuth2Row]:
    query = select(oauth2_providers).order_by(oauth2_providers.c.name).limit(limit)
    if after is not None:
        query = query.where(oauth2_providers.c.name > after)
    return [_oauth2(row) for row in conn.execute(query)]


# -- tags ------------------------------------------------------------------------------------------------------


def put_tags(conn: Connection, resource_arn: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        conn.execute(
            delete(identity_tags).where(identity_tags.c.resource_arn == resource_arn, identity_tags.c.key == key)
        )
        conn.execute(insert(identity_tags).values(resource_arn=resource_arn, key=key, value=value))


def drop_tags(conn: Connection, resource_arn: str) -> None:
    conn.execute(delete(identity_tags).where(identity_tags.c.resource_arn == resource_arn))


def tags_of(conn: Connection, resource_arn: str) -> dict[str, str]:
    rows = conn.execute(
        select(identity_tags.c.key, identity_tags.c.value).where(identity_tags.c.resource_arn == resource_arn)
    )
    return {row.key: row.value for row in rows}
