"""The identity keys every process of one installation must share, and the checks that they do.

Gateways and ``hangar node``s each keep two key files in their data dir: the token vault's key ring
(``HANGAR_VAULT_KEY_FILE``, default ``identity/vault.keys``), which opens the sealed API keys and client secrets of
the shared store, and ``identity/wat.key``, which signs workload access tokens. Both are copied from the first
gateway's data dir (docs/cluster.md). A node with a missing or different copy would answer its agents with
decryption failures or reject the tokens gateways mint, so it refuses to start instead, saying what to copy:

* the vault key ring must exist and open one sealed value of the store (when there is one);
* ``wat.key`` must exist and match the fingerprint gateways record in the store (``control_secrets``), an HMAC of a
  fixed label under the key, which reveals nothing of the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from sqlalchemy import Connection, insert, select, update

from hangar.domain.errors import DecryptionFailureError
from hangar.identity.control import api_key_context, client_secret_context
from hangar.identity.vault import Vault
from hangar.store.tables import api_key_providers, control_secrets, oauth2_providers
from hangar.store.transactions import Store

log = logging.getLogger("hangar.identity")

WAT_KEY_CHECK = "workload_token_key_check"  # the control_secrets row gateways write
_LABEL = b"hangar workload access token key fingerprint v1"


def wat_key_fingerprint(key: bytes) -> str:
    return hmac.new(key, _LABEL, hashlib.sha256).hexdigest()


def record_wat_key(store: Store, key: bytes) -> None:
    """A gateway records its key's fingerprint (the last one to start wins, so a replaced key is followed)."""
    fingerprint = wat_key_fingerprint(key)

    def write(conn: Connection) -> str | None:
        row = conn.execute(select(control_secrets.c.value).where(control_secrets.c.name == WAT_KEY_CHECK)).first()
        if row is None:
            conn.execute(insert(control_secrets).values(name=WAT_KEY_CHECK, value=fingerprint))
            return None
        if row.value != fingerprint:
            conn.execute(
                update(control_secrets).where(control_secrets.c.name == WAT_KEY_CHECK).values(value=fingerprint)
            )
        return str(row.value)

    before = store.write(write)
    if before is not None and before != fingerprint:
        log.warning(
            "identity/wat.key differs from the one another gateway of this store recorded: workload access tokens "
            "minted by one do not verify at the other (copy one wat.key to every gateway and node)"
        )


def require_wat_key(path: Path, store: Store) -> bytes:
    """The workload-access-token key a node was given, when it is the gateways' one; RuntimeError otherwise."""
    fix = f"copy <first gateway's data dir>/identity/wat.key to {path} (mode 0600)"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise RuntimeError(f"the workload access token key {path} is missing: {fix}") from None
    if len(key) < 32:
        raise RuntimeError(f"{path} holds a key shorter than 32 bytes: {fix}")
    recorded = store.read(
        lambda conn: conn.execute(
            select(control_secrets.c.value).where(control_secrets.c.name == WAT_KEY_CHECK)
        ).scalar()
    )
    if recorded is None:
        raise RuntimeError("no gateway has recorded its workload access token key in the store yet: start a gateway")
    if not hmac.compare_digest(str(recorded), wat_key_fingerprint(key)):
        raise RuntimeError(f"{path} is not the gateways' workload access token key: {fix}")
    return key


def require_vault_key_file(path: Path) -> None:
    """Before the key ring is opened (it would create a fresh, useless key): the file must have been copied."""
    if not path.exists():
        raise RuntimeError(
            f"the token vault key file {path} is missing: copy <first gateway's data dir>/identity/vault.keys "
            "there (mode 0600), or set HANGAR_VAULT_KEY_FILE to a copy"
        )


def sealed_sample(store: Store) -> tuple[bytes, str] | None:
    """One sealed value of the store and its context, or None when nothing is sealed yet."""

    def sample(conn: Connection) -> tuple[bytes, str] | None:
        row = conn.execute(select(api_key_providers.c.name, api_key_providers.c.api_key_sealed).limit(1)).first()
        if row is not None:
            return bytes(row.api_key_sealed), api_key_context(row.name)
        row = conn.execute(
            select(oauth2_providers.c.name, oauth2_providers.c.client_secret_sealed)
            .where(oauth2_providers.c.client_secret_sealed.is_not(None))
            .limit(1)
        ).first()
        return None if row is None else (bytes(row.client_secret_sealed), client_secret_context(row.name))

    return store.read(sample)


def require_vault_opens(store: Store, vault: Vault) -> None:
    """One sealed value of the store opens with ``vault`` (nothing sealed yet: nothing to check)."""
    found = sealed_sample(store)
    if found is None:
        return
    try:
        vault.open(*found)
    except DecryptionFailureError:
        raise RuntimeError(
            f"the token vault key file {vault.ring.path} cannot open the store's sealed secrets: copy the gateways' "
            "current identity/vault.keys there again (after a key rotation, every node needs the new file)"
        ) from None
