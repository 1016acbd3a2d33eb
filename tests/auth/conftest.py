"""Fixtures of the inbound-auth suite: one real ``hangar serve`` shared by the SigV4 tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import HangarServer, read_admin_key


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    server = HangarServer(data_dir=tmp_path_factory.mktemp("auth") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_key(auth_server: HangarServer) -> tuple[str, str]:
    return read_admin_key(auth_server.credentials_file)
