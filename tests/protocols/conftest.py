"""Protocol suite fixtures: one real ``hangar serve`` with the protocol examples in its store, and a real IdP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dataplane.support import seeded_server
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer

AGENTS = ("mcp_server", "a2a_agent", "agui_agent", "langgraph", "strands", "crewai")


@pytest.fixture(scope="package")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-protocols-", AGENTS) as hangar:
        yield hangar


@pytest.fixture(scope="package")
def control(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="package")
def data(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore")


@pytest.fixture(scope="package")
def panva_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    idp = start_panva(tmp_path_factory.mktemp("panva"))
    yield idp
    idp.stop()
