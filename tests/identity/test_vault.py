"""The token vault: authenticated encryption bound to each row, a key file that is never regenerated, rotation
under load with every secret intact, and SIGKILL in the middle of provider updates and a rotation."""

from __future__ import annotations

import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hangar.domain.arns import Place
from hangar.domain.errors import DecryptionFailureError
from hangar.identity.control import IdentityPlace
from hangar.identity.directory import StoreDirectory
from hangar.identity.vault import KeyRing, Vault, key_id_of
from hangar.store.engine import create_store_engine
from hangar.store.transactions import Store
from tests.control.support import signed, wait_until
from tests.support.postgres import PostgresCluster
from tests.support.server import HangarServer


def key_file(data_dir: Path) -> Path:
    return data_dir / "identity" / "vault.keys"


@pytest.fixture
def directory_of() -> Iterator[Any]:
    """Opens a server's store and key file from this process, as an operator with both would (to read secrets)."""
    engines: list[Any] = []

    def open_directory(data_dir: Path) -> StoreDirectory:
        engine = create_store_engine(f"sqlite:///{data_dir / 'hangar.db'}")
        engines.append(engine)
        where = IdentityPlace(Place("123456789012", "us-west-2"), "http://127.0.0.1")
        return StoreDirectory(Store(engine), Vault(KeyRing(key_file(data_dir))), where)

    yield open_directory
    for engine in engines:
        engine.dispose()


def rotate(server: HangarServer) -> dict[str, Any]:
    response = signed(server, "POST", "/hangar/identity/rotate-vault-key")
    assert response.status_code == 200, response.text
    return response.json()


def vault_status(server: HangarServer) -> dict[str, Any]:
    response = signed(server, "GET", "/hangar/identity/vault")
    assert response.status_code == 200, response.text
    return response.json()


# -- the box itself --------------------------------------------------------------------------------------------


def test_seal_open_tamper_and_context(tmp_path: Path) -> None:
    vault = Vault(KeyRing(tmp_path / "vault.keys"))
    sealed = vault.seal(b"s3cr3t", "api-key-provider/a/api-key")
    assert b"s3cr3t" not in sealed and key_id_of(sealed) == vault.ring.current
    assert vault.open(sealed, "api-key-provider/a/api-key") == b"s3cr3t"
    assert vault.seal(b"s3cr3t", "ctx") != vault.seal(b"s3cr3t", "ctx")  # fresh nonce every time

    for position in (len(sealed) - 1, len(sealed) // 2, 20):  # tag, ciphertext, nonce
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionFailureError):
            vault.open(bytes(tampered), "api-key-provider/a/api-key")
    with pytest.raises(DecryptionFailureError):  # the same value presented as another row's
        vault.open(sealed, "api-key-provider/b/api-key")
    with pytest.raises(DecryptionFailureError):
        vault.open(b"not a vault value", "api-key-provider/a/api-key")


def test_key_file_is_private_and_never_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "identity" / "vault.keys"
    first = KeyRing(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = Vault(first).seal(b"kept", "c")
    again = KeyRing(path)
    assert again.current == first.current and Vault(again).open(sealed, "c") == b"kept"


def test_rotation_keeps_old_values_readable_until_retired(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "vault.keys")
    vault = Vault(ring)
    old = vault.seal(b"old", "c")
    old_id = ring.current
    ring.add_current()
    assert ring.current != old_id and key_id_of(vault.seal(b"new", "c")) == ring.current
    assert vault.open(old, "c") == b"old"
    ring.retire({old_id})
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    with pytest.raises(DecryptionFailureError):
        vault.open(old, "c")


# -- through a server ------------------------------------------------------------------------------------------


def test_tampered_or_moved_ciphertexts_are_refused(hangar: HangarServer, directory_of: Any) -> None:
    control = hangar.boto3_client("bedrock-agentcore-control")
    control.create_api_key_credential_provider(name="vault-a", apiKey="value-a")
    control.create_api_key_credential_provider(name="vault-b", apiKey="value-b")
    directory = directory_of(hangar.data_dir)
    assert directory.api_key("vault-a") == "value-a" and directory.api_key("vault-b") == "value-b"

    with sqlite3.connect(hangar.data_dir / "hangar.db", timeout=10) as db:
        sealed_a = db.execute("SELECT api_key_sealed FROM api_key_providers WHERE name='vault-a'").fetchone()[0]
        db.execute("UPDATE api_key_providers SET api_key_sealed=? WHERE name='vault-b'", (sealed_a,))
        flipped = bytearray(sealed_a)
        flipped[-3] ^= 0x80
        db.execute("UPDATE api_key_providers SET api_key_sealed=? WHERE name='vault-a'", (bytes(flipped),))
    with pytest.raises(DecryptionFailureError):
        directory.api_key("vault-a")
    with pytest.raises(DecryptionFailureError):  # a's ciphertext moved to b's row does not open as b's key
        directory.api_key("vault-b")
    key_text = key_file(hangar.data_dir).read_text()
    assert "value-a" not in key_text and stat.S_IMODE(key_file(hangar.data_dir).stat().st_mode) == 0o600

    # a rotation re-seals what opens and keeps the key the two broken values name, rather than fail or destroy
    old_key = key_id_of(sealed_a)
    report = rotate(hangar)
    assert report["unreadable"] == 2 and old_key not in report["retiredKeyIds"]
    assert old_key in {k["keyId"] for k in vault_status(hangar)["keys"]}
    control.delete_api_key_credential_provider(name="vault-a")
    control.delete_api_key_credential_provider(name="vault-b")
    report = rotate(hangar)
    assert report["unreadable"] == 0 and old_key in report["retiredKeyIds"]
    assert [k["current"] for k in vault_status(hangar)["keys"]] == [True]


def test_rotation_under_load(hangar: HangarServer, directory_of: Any) -> None:
    control = hangar.boto3_client("bedrock-agentcore-control")
    names = [f"load-{i}" for i in range(8)]
    acked: dict[str, str] = {}
    for name in names:
        acked[name] = secrets.token_hex(8)
        control.create_api_key_credential_provider(name=name, apiKey=acked[name])
    control.create_oauth2_credential_provider(
        name="load-oauth",
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "load-secret"}},
    )
    failures: list[BaseException] = []
    stop = threading.Event()
    rounds = [0]

    def load() -> None:
        client = hangar.boto3_client("bedrock-agentcore-control")
        try:
            while not stop.is_set():
                for name in names:
                    value = secrets.token_hex(8)
                    client.update_api_key_credential_provider(name=name, apiKey=value)
                    acked[name] = value
                    client.get_api_key_credential_provider(name=name)
                client.list_api_key_credential_providers()
                rounds[0] += 1
        except (ClientError, Exception) as exc:  # any failure under rotation fails the test
            failures.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: {"rounds": rounds[0]}, lambda r: r["rounds"] >= 2 or bool(failures), timeout=60)
        reports = []
        for _ in range(3):
            reports.append(rotate(hangar))
            start = rounds[0]
            wait_until(lambda: {"rounds": rounds[0]}, lambda r, s=start: r["rounds"] > s or bool(failures), timeout=60)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures, failures
    assert len({r["currentKeyId"] for r in reports}) == 3 and all(r["retiredKeyIds"] for r in reports)

    status = vault_status(hangar)
    assert [k["current"] for k in status["keys"]] == [True]  # old keys retired
    assert status["keys"][0]["secrets"] >= len(names) + 1
    directory = directory_of(hangar.data_dir)
    for name in names:
        assert directory.api_key(name) == acked[name]
    assert directory.oauth2_client("load-oauth").client_secret == "load-secret"


def test_sigkill_during_updates_and_rotation_loses_nothing(tmp_path: Path, directory_of: Any) -> None:
    server = HangarServer(data_dir=tmp_path / "data").start()
    control = server.boto3_client("bedrock-agentcore-control")
    names = [f"kill-{i}" for i in range(120)]  # enough rows that the rotation's pass takes a few transactions
    acked = {name: f"first-{name}" for name in names}
    in_flight: dict[str, str] = {}
    for name in names:
        control.create_api_key_credential_provider(name=name, apiKey=acked[name])
    updates = [0]

    def update_forever() -> None:
        client = server.boto3_client("bedrock-agentcore-control")
        while True:
            for name in names[:20]:
                value = secrets.token_hex(8)
                in_flight[name] = value
                try:
                    client.update_api_key_credential_provider(name=name, apiKey=value)
                except Exception:  # the server died under this request
                    return
                acked[name] = value
                updates[0] += 1

    def rotate_once() -> None:
        try:
            rotate(server)
        except Exception:  # killed mid-rotation: the restart finishes it
            return

    updater = threading.Thread(target=update_forever)
    updater.start()
    rotator = threading.Thread(target=rotate_once)
    try:
        wait_until(lambda: {"n": updates[0]}, lambda r: r["n"] >= 20, timeout=60)
        rotator.start()
        wait_until(lambda: {"n": updates[0]}, lambda r: r["n"] >= 25, timeout=60)
        server.kill()
    finally:
        server.kill()
        updater.join(timeout=60)
        if rotator.is_alive() or rotator.ident is not None:
            rotator.join(timeout=60)

    server.start()
    try:
        # a rotation the kill interrupted is finished at start-up; every value ends on one key
        wait_until(lambda: vault_status(server), lambda s: len(s["keys"]) == 1, timeout=60)
        directory = directory_of(server.data_dir)
        for name in names:
            value = directory.api_key(name)
            assert value in {acked[name], in_flight.get(name)}, name
        control = server.boto3_client("bedrock-agentcore-control")
        control.update_api_key_credential_provider(name=names[0], apiKey="after-restart")
        assert directory.api_key(names[0]) == "after-restart"
    finally:
        server.stop()


def test_rotation_on_postgresql(tmp_path: Path, postgres: PostgresCluster) -> None:
    url = postgres.new_database()
    server = HangarServer(data_dir=tmp_path / "data", env={"HANGAR_DATABASE_URL": url}).start()
    engine = create_store_engine(url)
    try:
        control = server.boto3_client("bedrock-agentcore-control")
        control.create_api_key_credential_provider(name="pg-key", apiKey="pg-value")
        control.create_oauth2_credential_provider(
            name="pg-oauth",
            credentialProviderVendor="SlackOauth2",
            oauth2ProviderConfigInput={"slackOauth2ProviderConfig": {"clientId": "c", "clientSecret": "pg-secret"}},
        )
        control.update_api_key_credential_provider(name="pg-key", apiKey="pg-value-2")
        report = rotate(server)
        assert report["rewritten"] == 2 and len(report["retiredKeyIds"]) == 1
        where = IdentityPlace(Place("123456789012", "us-west-2"), "http://127.0.0.1")
        directory = StoreDirectory(Store(engine), Vault(KeyRing(key_file(server.data_dir))), where)
        assert directory.api_key("pg-key") == "pg-value-2"
        assert directory.oauth2_client("pg-oauth").client_secret == "pg-secret"
    finally:
        engine.dispose()
        server.stop()
