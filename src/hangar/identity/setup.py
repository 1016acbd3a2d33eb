"""Build the identity control plane: the vault, its rotation, the directory, the use cases."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine

from hangar.config import Settings
from hangar.domain.arns import Place
from hangar.identity.control import (
    IdentityContext,
    IdentityControl,
    IdentityPlace,
    api_key_context,
    client_secret_context,
    fetch_discovery,
)
from hangar.identity.directory import StoreDirectory
from hangar.identity.vault import KeyRing, Rotation, RotationReport, SealedColumn, Vault
from hangar.store import idempotency
from hangar.store.tables import api_key_providers, oauth2_providers
from hangar.store.transactions import Store

log = logging.getLogger("hangar.identity")


@dataclass
class Identity:
    """``services.identity``: ``directory`` and ``box`` are the data plane's seam (``identity/ports.py``)."""

    control: IdentityControl
    directory: StoreDirectory
    box: Vault
    rotation: Rotation
    _tasks: list[asyncio.Task[RotationReport]] = field(default_factory=list)

    def register_sealed(self, column: SealedColumn) -> None:
        """A column of values sealed with ``box``: rotation re-seals it too. Seal inside ``Store.write``."""
        self.rotation.columns.append(column)

    async def start(self) -> None:
        """Finish a rotation a crash interrupted (the key file still holds old keys), in the background."""
        if len(self.box.ring.keys) > 1:
            self._tasks.append(asyncio.create_task(asyncio.to_thread(self.rotation.finish)))

    async def stop(self) -> None:
        for task in self._tasks:
            await asyncio.gather(task, return_exceptions=True)


def _has_sealed_values(store: Store) -> bool:
    def read(conn: Connection) -> bool:
        for table in (api_key_providers, oauth2_providers):
            if conn.execute(select(table.c.name).limit(1)).first() is not None:
                return True
        return False

    return store.read(read)


def build_identity(settings: Settings, engine: Engine) -> Identity:
    """The vault (refusing to start without its key file once secrets are sealed), its rotation and the use cases."""
    store = Store(engine)
    key_file = settings.resolved_vault_key_file
    if not key_file.exists() and _has_sealed_values(store):
        raise RuntimeError(
            f"the token vault key file {key_file} is missing but the store holds sealed secrets; restore the file"
            " (a new key could not open them)"
        )
    vault = Vault(KeyRing(key_file))
    columns = [
        SealedColumn(api_key_providers, "api_key_sealed", lambda row: api_key_context(row["name"])),
        SealedColumn(oauth2_providers, "client_secret_sealed", lambda row: client_secret_context(row["name"])),
    ]
    rotation = Rotation(store, vault, columns)
    where = IdentityPlace(Place(settings.account_id, settings.region), settings.resolved_public_url)
    token_secret = store.write(lambda conn: idempotency.secret(conn, "next_token_key", secrets.token_hex(32)))
    ctx = IdentityContext(store, where, bytes.fromhex(token_secret), vault, rotation, fetch_discovery)
    return Identity(IdentityControl(ctx), StoreDirectory(store, vault, where), vault, rotation)
