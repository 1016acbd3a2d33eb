"""The token vault: AES-256-GCM with a key ring kept in a key file, and key rotation without downtime.

A sealed value is ``b"hv1" | len(key id) | key id | 12-byte nonce | ciphertext+tag``. The key id and the caller's
``context`` (which row and column the value belongs to) are the associated data, so a value copied to another row,
or whose key id was edited, fails to open instead of decrypting to the wrong secret.

The key file (JSON, mode 0600) holds every key still readable and names the current one. It is created once, on
first start, and only ever replaced atomically with a superset or, after a finished re-encrypt pass, without the
keys no row uses any more. Rotation: a new key becomes current (new seals use it at once, old values still open),
a pass rewrites every sealed value under the current key, then the old keys are retired.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Table, and_, select, update

from hangar.domain.errors import DecryptionFailureError, EncryptionFailureError
from hangar.store.transactions import Store

log = logging.getLogger("hangar.identity.vault")

MAGIC = b"hv1"
_NONCE = 12
_BATCH = 50  # values re-encrypted per transaction, so a rotation never holds the writer for long


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class VaultKey:
    key_id: str
    material: bytes
    created_at: str


class KeyRing:
    """The keys of the key file. Re-read when the file changes, so several processes on one data dir agree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self.keys: dict[str, VaultKey] = {}
        self.current = ""
        self._load_or_create()

    # -- file ------------------------------------------------------------------------------------------------
    def _load_or_create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            key = self._new_key()
            with contextlib.suppress(FileExistsError):  # another process created it first: theirs is the one
                self._write({key.key_id: key}, key.key_id, exclusive=True)
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since the last read (a rotation by another process)."""
        with self._lock:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if not force and stamp == self._stamp:
                return
            document = json.loads(self.path.read_text())
            keys = {
                key_id: VaultKey(key_id, base64.b64decode(item["key"]), item["createdAt"])
                for key_id, item in document["keys"].items()
            }
            if document["current"] not in keys or any(len(k.material) != 32 for k in keys.values()):
                raise RuntimeError(f"vault key file {self.path} is damaged: no valid current 256-bit key")
            self.keys, self.current, self._stamp = keys, document["current"], stamp

    def _write(self, keys: dict[str, VaultKey], current: str, *, exclusive: bool = False) -> None:
        document = {
            "version": 1,
            "current": current,
            "keys": {
                k.key_id: {"key": base64.b64encode(k.material).decode(), "createdAt": k.created_at}
                for k in keys.values()
            },
        }
        data = json.dumps(document, indent=1).encode()
        target = self.path if exclusive else self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not exclusive:
            os.replace(target, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _new_key() -> VaultKey:
        return VaultKey(f"k{secrets.token_hex(6)}", AESGCM.generate_key(bit_length=256), _now_iso())

    # -- changes ---------------------------------------------------------------------------------------------
    def add_current(self) -> VaultKey:
        """A new key, durable in the file before anything is sealed with it, becomes current."""
        self.refresh()
        key = self._new_key()
        keys = {**self.keys, key.key_id: key}
        self._write(keys, key.key_id)
        self.refresh(force=True)
        return key

    def retire(self, key_ids: set[str]) -> None:
        self.refresh()
        keep = {k: v for k, v in self.keys.items() if k not in key_ids or k == self.current}
        if keep != self.keys:
            self._write(keep, self.current)
            self.refresh(force=True)


def key_id_of(sealed: bytes) -> str | None:
    """The key id a sealed value names, or None if it is not one."""
    if len(sealed) < 4 or not sealed.startswith(MAGIC):
        return None
    length = sealed[3]
    if len(sealed) < 4 + length + _NONCE + 16:
        return None
    return sealed[4 : 4 + length].decode("ascii", errors="replace")


class Vault:
    """``SecretBox``: seal with the current key, open with whichever key a value names."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def seal(self, plaintext: bytes, context: str) -> bytes:
        try:
            self.ring.refresh()
            key = self.ring.keys[self.ring.current]
            header = MAGIC + bytes([len(key.key_id)]) + key.key_id.encode("ascii")
            nonce = os.urandom(_NONCE)
            return header + nonce + AESGCM(key.material).encrypt(nonce, plaintext, header + context.encode())
        except (OSError, ValueError, KeyError) as exc:
            raise EncryptionFailureError(f"The token vault could not seal a secret ({type(exc).__name__})") from None

    def open(self, sealed: bytes, context: str) -> bytes:
        key_id = key_id_of(sealed)
        if key_id is None:
            raise DecryptionFailureError("A stored secret is not a token vault value")
        key = self.ring.keys.get(key_id)
        if key is None:
            self.ring.refresh()
            key = self.ring.keys.get(key_id)
        if key is None:
            raise DecryptionFailureError(f"A stored secret names vault key {key_id}, which this vault does not hold")
        split = 4 + len(key_id)
        header, nonce, body = sealed[:split], sealed[split : split + _NONCE], sealed[split + _NONCE :]
        try:
            return AESGCM(key.material).decrypt(nonce, body, header + context.encode())
        except InvalidTag:
            raise DecryptionFailureError("A stored secret failed its integrity check") from None


@dataclass(frozen=True)
class SealedColumn:
    """One column of sealed values, with the context each row's value was sealed under."""

    table: Table
    column: str
    context: Callable[[Any], str]  # the row (all its columns) → the context string


@dataclass(frozen=True)
class RotationReport:
    current_key_id: str
    rewritten: int
    retired_key_ids: tuple[str, ...]
    unreadable: int = 0  # values that failed their integrity check: left as they are, their keys kept


class Rotation:
    """Rotate the vault key and bring every sealed value onto it; one rotation at a time per process.

    Callers that seal must do so inside ``Store.write`` (the store's writer lock), so that after the new key is made
    current under that lock no write can still commit a value sealed with an old key unseen by the final check.
    """

    def __init__(self, store: Store, vault: Vault, columns: list[SealedColumn]) -> None:
        self.store = store
        self.vault = vault
        self.columns = columns
        self._lock = threading.Lock()

    def rotate(self) -> RotationReport:
        with self._lock:
            self.store.write(lambda _conn: self.vault.ring.add_current())
            log.info("vault key rotated; current key %s", self.vault.ring.current)
            return self._finish()

    def finish(self) -> RotationReport:
        """Complete a rotation a crash interrupted (old keys still in the file); nothing to do otherwise."""
        with self._lock:
            return self._finish()

    def counts(self) -> dict[str, int]:
        """How many stored values each key seals."""
        found: dict[str, int] = {}

        def read(conn: Connection) -> None:
            for column in self.columns:
                for row in conn.execute(select(column.table.c[column.column])):
                    if row[0]:
                        key_id = key_id_of(bytes(row[0])) or "?"
                        found[key_id] = found.get(key_id, 0) + 1

        self.store.read(read)
        return found

    def _finish(self) -> RotationReport:
        rewritten = 0
        stuck: dict[str, int] = {}  # key id → values under it that do not open (tampered, or a wrong context)
        for column in self.columns:

            def batch_of(conn: Connection, column: SealedColumn = column) -> int:
                return self._rewrite(conn, column, _BATCH, stuck)

            while True:
                batch = self.store.write(batch_of)
                rewritten += batch
                if batch < _BATCH:
                    break
        # Under the writer lock: catch any value sealed before the switch; the old keys go only once that commits.
        stuck.clear()
        rewritten += self.store.write(lambda conn: sum(self._rewrite(conn, c, None, stuck) for c in self.columns))
        retired = {k for k in self.vault.ring.keys if k != self.vault.ring.current and k not in stuck}
        self.vault.ring.retire(retired)
        if retired:
            log.info("vault keys retired: %s", ", ".join(sorted(retired)))
        if stuck:
            log.warning("vault keys kept: stored values under %s fail their integrity check", ", ".join(sorted(stuck)))
        return RotationReport(self.vault.ring.current, rewritten, tuple(sorted(retired)), sum(stuck.values()))

    def _rewrite(self, conn: Connection, column: SealedColumn, limit: int | None, stuck: dict[str, int]) -> int:
        """Re-seal up to ``limit`` values not under the current key; compare-and-swap, so racing updates win."""
        current = self.vault.ring.current
        table = column.table
        done = 0
        for row in conn.execute(select(table)).mappings():
            sealed = row[column.column]
            key_id = None if sealed is None else key_id_of(bytes(sealed))
            if not sealed or key_id == current:  # nothing stored (None, or a placeholder b"")
                continue
            context = column.context(row)
            try:
                plaintext = self.vault.open(bytes(sealed), context)
            except DecryptionFailureError:
                stuck[key_id or "?"] = stuck.get(key_id or "?", 0) + 1
                continue
            keys = [table.c[c.name] == row[c.name] for c in table.primary_key.columns]
            fresh = self.vault.seal(plaintext, context)
            conn.execute(
                update(table).where(and_(*keys, table.c[column.column] == sealed)).values({column.column: fresh})
            )
            done += 1
            if limit is not None and done >= limit:
                break
        return done
