"""The credential store on a real SQLite database: encryption at rest, cheap last-used bookkeeping, safety rails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from cryptography.fernet import Fernet

from hangar.auth.credentials import CredentialStore
from hangar.auth.vault import open_vault
from hangar.domain.errors import ConflictError, InternalError, NotFoundError, ValidationError
from hangar.store.engine import open_engine


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[CredentialStore, _Clock, Path]]:
    engine = open_engine(f"sqlite:///{tmp_path / 'hangar.db'}")
    clock = _Clock()
    yield CredentialStore(engine, open_vault(tmp_path / "vault.key"), "123456789012", clock=clock), clock, tmp_path
    engine.dispose()


def _last_used(store: CredentialStore, key_id: str):  # type: ignore[no-untyped-def]
    return next(k.last_used_at for k in store.list_keys() if k.access_key_id == key_id)


def test_last_used_is_written_at_most_once_a_minute(parts) -> None:  # type: ignore[no-untyped-def]
    store, clock, _ = parts
    key, _ = store.create("worker")
    assert _last_used(store, key.access_key_id) is None
    anyio.run(store.record_use, key.access_key_id)
    first = _last_used(store, key.access_key_id)
    assert first is not None
    clock.now += 59
    anyio.run(store.record_use, key.access_key_id)
    assert _last_used(store, key.access_key_id) == first
    clock.now += 2
    anyio.run(store.record_use, key.access_key_id)
    assert _last_used(store, key.access_key_id) > first


def test_secret_is_encrypted_and_needs_the_vault_key(parts) -> None:  # type: ignore[no-untyped-def]
    store, _, directory = parts
    key, secret = store.create("worker")
    assert secret.encode() not in (directory / "hangar.db").read_bytes()
    assert store.secret_matches(key.access_key_id, secret)
    assert not store.secret_matches(key.access_key_id, secret[:-1] + "x")
    other = CredentialStore(
        open_engine(f"sqlite:///{directory / 'hangar.db'}"), Fernet(Fernet.generate_key()), "1" * 12
    )
    with pytest.raises(InternalError):
        other.secret_matches(key.access_key_id, secret)


def test_vault_key_is_private_and_stable(tmp_path: Path) -> None:
    open_vault(tmp_path / "vault.key")
    first = (tmp_path / "vault.key").read_bytes()
    (tmp_path / "vault.key").chmod(0o644)
    open_vault(tmp_path / "vault.key")
    assert (tmp_path / "vault.key").read_bytes() == first
    assert (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600


def test_names_are_validated_and_the_last_key_is_kept(parts) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = parts
    for bad in ("", "   ", "x" * 257, "new\nline"):
        with pytest.raises(ValidationError):
            store.create(bad)
    only, _ = store.create("only")
    with pytest.raises(ConflictError):
        store.delete(only.access_key_id)
    with pytest.raises(NotFoundError):
        store.delete("HGRANOSUCHKEY0000000")
    second, _ = store.create("second")
    store.delete(only.access_key_id)
    assert [k.access_key_id for k in store.list_keys()] == [second.access_key_id]
    assert anyio.run(store.signing_key, only.access_key_id) is None
