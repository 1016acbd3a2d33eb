"""Fixtures of the inbound-auth suite: one real ``hangar serve`` and the two real identity providers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.idp_common import RunningIdp
from tests.support.idp_glewlwyd import start_glewlwyd
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer, read_admin_key


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    server = HangarServer(data_dir=tmp_path_factory.mktemp("auth") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_key(auth_server: HangarServer) -> tuple[str, str]:
    return read_admin_key(auth_server.credentials_file)


@pytest.fixture(scope="session")
def panva_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    idp = start_panva(tmp_path_factory.mktemp("panva"))
    yield idp
    idp.stop()


@pytest.fixture(scope="session")
def glewlwyd_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    idp = start_glewlwyd(tmp_path_factory.mktemp("glewlwyd"))
    yield idp
    idp.stop()


@pytest.fixture(params=["panva", "glewlwyd"], scope="session")
def idp(request: pytest.FixtureRequest) -> RunningIdp:
    """Each real IdP in turn."""
    return request.getfixturevalue(f"{request.param}_idp")
