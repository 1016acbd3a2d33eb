"""Helpers shared by the identity data-plane tests."""

from __future__ import annotations

from hangar.config import Settings
from hangar.domain.types import Principal
from hangar.services import Services
from tests.support.server import HangarServer


def in_process(server: HangarServer) -> Services:
    """The server's own components on its data dir (what the identity channel calls), without its HTTP front."""
    from hangar.auth.setup import wire as wire_auth
    from hangar.control.setup import wire as wire_control
    from hangar.identity.data_setup import wire as wire_identity_data
    from hangar.identity.setup import wire as wire_identity
    from hangar.store.engine import open_engine

    settings = Settings(data_dir=server.data_dir, port=server.port)
    services = Services(settings=settings, engine=open_engine(settings.resolved_database_url))
    for wire in (wire_auth, wire_control, wire_identity, wire_identity_data):
        wire(services)
    return services


def session(workload: str) -> Principal:
    return Principal(kind="session", account_id="123456789012", name="session", workload=workload, session_id="s-1")
