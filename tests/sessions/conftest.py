"""Session-manager tests: real process sandboxes running real agents, no server in between; and server tests
whose module starts its own ``server`` (settings of its own), given boto3 clients for it here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_env import shared_agent_env
from tests.support.server import HangarServer


@pytest.fixture(scope="session")
def agent_env() -> Path:
    return shared_agent_env()


@pytest.fixture(scope="module")
def control(server: HangarServer) -> Any:
    """The control-plane client of the module's own ``server`` fixture."""
    return server.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def data(server: HangarServer) -> Any:
    """The data-plane client of the module's own ``server`` fixture."""
    return server.boto3_client("bedrock-agentcore")
