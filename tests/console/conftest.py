"""One real ``hangar serve`` for the console tests, with the gated streaming agent deployed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.support import BUCKET, deploy, world_readable_dir
from tests.support.server import HangarServer, read_admin_key

AGENT = Path(__file__).resolve().parent / "agents" / "gated"


@pytest.fixture(scope="package")
def server() -> Iterator[HangarServer]:
    with world_readable_dir("hangar-console-") as root:
        target = root / "data" / "artifacts" / BUCKET / "gated"
        target.parent.mkdir(parents=True)
        shutil.copytree(AGENT, target, ignore=shutil.ignore_patterns("__pycache__"))
        hangar = HangarServer(data_dir=root / "data").start()
        try:
            yield hangar
        finally:
            hangar.stop()


@pytest.fixture(scope="package")
def runtime(server: HangarServer) -> dict[str, Any]:
    return deploy(server.boto3_client("bedrock-agentcore-control"), "gated")


@pytest.fixture(scope="package")
def admin_key(server: HangarServer) -> tuple[str, str]:
    return read_admin_key(server.credentials_file)
