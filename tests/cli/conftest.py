"""The CLI's server: its data dir is traversable by every uid, because deployed agents run in sandboxes as
unprivileged uids that must reach ``<data_dir>/versions`` (pytest's own temporary root is 0700)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def hangar() -> Iterator[HangarServer]:
    with tempfile.TemporaryDirectory(prefix="hangar-cli-") as directory:
        Path(directory).chmod(0o755)
        server = HangarServer(data_dir=Path(directory) / "data").start()
        try:
            yield server
        finally:
            server.stop()
