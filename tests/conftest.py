"""Shared fixtures: a real ``hangar serve`` on loopback per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    server = HangarServer(data_dir=tmp_path_factory.mktemp("hangar") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
