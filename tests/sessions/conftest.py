"""Session-manager tests: real process sandboxes running real agents, no server in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent_env import shared_agent_env


@pytest.fixture(scope="session")
def agent_env() -> Path:
    return shared_agent_env()
