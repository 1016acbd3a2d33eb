"""Data-plane e2e fixtures: one real ``hangar serve`` for the package with test agents in its artifact store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dataplane.support import seeded_server
from tests.support.server import HangarServer

AGENTS = ("echo", "streaming", "async_task", "websocket_echo", "testbed", "rawecho", "garbage", "realsdk", "misbehave")
# Lifecycle settings are seconds with a 60 s minimum on the wire; the server runs them 50x faster.
TIME_SCALE = "0.02"


@pytest.fixture(scope="package")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-dataplane-", AGENTS, env={"HANGAR_SESSION_TIME_SCALE": TIME_SCALE}) as hangar:
        yield hangar


@pytest.fixture(scope="package")
def control(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="package")
def data(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore")
