"""Fixtures of the control-plane tests: one real ``hangar serve`` per module and a boto3 client signed for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.control.support import seed_echo
from tests.support.postgres import postgres  # noqa: F401 - the session fixture
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    data_dir = tmp_path_factory.mktemp("control") / "data"
    seed_echo(data_dir)
    hangar = HangarServer(data_dir=data_dir).start()
    yield hangar
    hangar.stop()


@pytest.fixture(scope="module")
def client(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore-control")
