"""Hangar-managed access keys: who may sign requests, with secrets encrypted at rest.

Keys look like AWS ones (a 20-character id starting ``HGRA``, a 40-character secret) so every AWS client
accepts them unchanged. The secret is shown once, when the key is created; afterwards only the verifier reads it.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

import anyio.to_thread
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, delete, func, insert, select, update

from hangar.domain.errors import ConflictError, InternalError, NotFoundError, ValidationError
from hangar.store.tables import credentials as table

KEY_ID_PREFIX = "HGRA"
_KEY_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
# A verified secret is reused for this long, so a deletion on another gateway takes effect within it.
CACHE_TTL_S = 5.0
# ``last_used_at`` is written at most this often per key: a hot key costs one write a minute, not one a request.
LAST_USED_EVERY_S = 60.0
MAX_NAME_LEN = 256


@dataclass(frozen=True)
class AccessKey:
    """A key as listed: everything but the secret."""

    access_key_id: str
    account_id: str
    principal_name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    """What the verifier needs: the key, its owner, and the decrypted secret."""

    access_key_id: str
    account_id: str
    principal_name: str
    secret: str

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        return f"SigningKey({self.access_key_id!r}, principal={self.principal_name!r})"


def new_key_pair() -> tuple[str, str]:
    key_id = KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return key_id, secret


class CredentialStore:
    """The ``credentials`` table behind a small cache; blocking database work runs off the event loop."""

    def __init__(
        self, engine: Engine, vault: Fernet, account_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._account_id = account_id
        self._clock = clock
        self._cache: dict[str, tuple[float, SigningKey]] = {}
        self._last_used_written: dict[str, float] = {}

    # -- administration (operator API, first start) --------------------------------------------------------

    def create(self, principal_name: str) -> tuple[AccessKey, str]:
        """Make a new key for ``principal_name``; returns it with its secret (the only time it is readable)."""
        name = principal_name.strip()
        if not name or len(name) > MAX_NAME_LEN or not name.isprintable():
            raise ValidationError(f"name must be 1-{MAX_NAME_LEN} printable characters")
        key_id, secret = new_key_pair()
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(
                insert(table).values(
                    access_key_id=key_id,
                    secret_encrypted=self._vault.encrypt(secret.encode()).decode(),
                    account_id=self._account_id,
                    principal_name=name,
                    created_at=now,
                    last_used_at=None,
                )
            )
        return AccessKey(key_id, self._account_id, name, now, None), secret

    def list_keys(self) -> list[AccessKey]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.created_at, table.c.access_key_id)).all()
        return [
            AccessKey(r.access_key_id, r.account_id, r.principal_name, _utc(r.created_at), _utc(r.last_used_at))
            for r in rows
        ]

    def delete(self, access_key_id: str) -> None:
        """Remove a key; the last remaining key cannot be deleted (nobody could sign anything afterwards)."""
        with self._engine.begin() as conn:
            if (
                conn.execute(select(table.c.access_key_id).where(table.c.access_key_id == access_key_id)).first()
                is None
            ):
                raise NotFoundError(f"Access key {access_key_id} does not exist")
            remaining = conn.execute(select(func.count()).select_from(table)).scalar_one()
            if remaining <= 1:
                raise ConflictError("Refusing to delete the last access key: create another one first")
            conn.execute(delete(table).where(table.c.access_key_id == access_key_id))
        self._cache.pop(access_key_id, None)
        self._last_used_written.pop(access_key_id, None)

    def secret_matches(self, access_key_id: str, secret: str) -> bool:
        """True when the key exists and its secret is ``secret`` (used to keep an existing admin key file)."""
        found = self._load(access_key_id)
        return found is not None and secrets.compare_digest(found.secret.encode(), secret.encode())

    # -- the request path ----------------------------------------------------------------------------------

    async def signing_key(self, access_key_id: str) -> SigningKey | None:
        """The key with its secret, or None when no such key exists (a fresh miss always asks the database)."""
        cached = self._cache.get(access_key_id)
        now = self._clock()
        if cached is not None and now - cached[0] < CACHE_TTL_S:
            return cached[1]
        found = await anyio.to_thread.run_sync(self._load, access_key_id)
        if found is None:
            self._cache.pop(access_key_id, None)
            return None
        self._cache[access_key_id] = (now, found)
        return found

    async def record_use(self, access_key_id: str) -> None:
        """Note that the key signed a request; writes at most once a minute per key."""
        now = self._clock()
        last = self._last_used_written.get(access_key_id)
        if last is not None and now - last < LAST_USED_EVERY_S:
            return
        self._last_used_written[access_key_id] = now
        await anyio.to_thread.run_sync(self._write_last_used, access_key_id)

    def _write_last_used(self, access_key_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(table).where(table.c.access_key_id == access_key_id).values(last_used_at=datetime.now(UTC))
            )

    def _load(self, access_key_id: str) -> SigningKey | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.access_key_id == access_key_id)).first()
        if row is None:
            return None
        try:
            secret = self._vault.decrypt(row.secret_encrypted.encode()).decode()
        except InvalidToken as exc:
            raise InternalError("An access key cannot be decrypted: the vault key does not match the store") from exc
        return SigningKey(row.access_key_id, row.account_id, row.principal_name, secret)


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
