"""Helpers shared by the identity data-plane tests."""

from __future__ import annotations

from hangar.config import Settings
from hangar.domain.types import Principal
from hangar.services import Services, build_services
from tests.support.server import HangarServer


def in_process(server: HangarServer) -> Services:
    """The server's own components on its data dir (what the identity channel calls), without its HTTP front."""
    return build_services(Settings(data_dir=server.data_dir, port=server.port))


def session(workload: str) -> Principal:
    return Principal(kind="session", account_id="123456789012", name="session", workload=workload, session_id="s-1")
