"""The composition root: one ``Services`` object per process, built from the settings.

The gateway reaches every use case through it (``request.app.state.services``); nothing else builds
components, so tests can start a whole server in-process with ``create_app(Settings(...))``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hangar.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from hangar.auth.credentials import CredentialStore
    from hangar.auth.jwt import JwtAuthorizer
    from hangar.auth.sigv4 import SigV4Verifier
    from hangar.control.registry import Registry
    from hangar.control.service import ControlPlane
    from hangar.gateway.identity_channel import IdentityChannel
    from hangar.identity.dataplane import IdentityDataPlane
    from hangar.identity.setup import Identity
    from hangar.observability.metrics import Metrics
    from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    credentials: CredentialStore | None = None
    sigv4: SigV4Verifier | None = None
    jwt: JwtAuthorizer | None = None
    control: ControlPlane | None = None
    identity: Identity | None = None
    identity_data: IdentityDataPlane | None = None
    sessions: SessionManager | None = None
    identity_channel: IdentityChannel | None = None  # the sandboxes' identity endpoint and credentials
    metrics: Metrics | None = None
    registry: Registry | None = None  # Hangar's container registry (ECR API and /v2), wired by control

    def _components(self) -> list[Any]:
        """Start order: identity of callers first, then the control plane, then sessions."""
        return [
            c
            for c in (
                self.credentials,
                self.sigv4,
                self.jwt,
                self.control,
                self.identity,
                self.identity_data,
                self.identity_channel,  # before sessions: an agent may fetch credentials as it imports
                self.sessions,
            )
            if c is not None
        ]

    async def start(self) -> None:
        """Start background work (resume interrupted builds, reap sessions, warm pools)."""
        for component in self._components():
            starter = getattr(component, "start", None)
            if starter is not None:
                await starter()

    async def stop(self) -> None:
        """Stop in reverse order: sessions end before the store closes."""
        for component in reversed(self._components()):
            stopper = getattr(component, "stop", None)
            if stopper is None:
                continue
            try:
                await stopper()
            except Exception:
                log.exception("error while stopping %s", type(component).__name__)
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    """Create the data dir, open and migrate the store, wire the components together.

    Each package contributes one ``wire(services)`` call below, in dependency order.
    """
    from hangar.store.engine import open_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = Services(settings=settings, engine=open_engine(settings.resolved_database_url))
    from hangar.auth.setup import wire as wire_auth
    from hangar.control.setup import wire as wire_control
    from hangar.identity.data_setup import wire as wire_identity_data
    from hangar.identity.setup import wire as wire_identity
    from hangar.observability.setup import wire as wire_observability
    from hangar.sessions.setup import wire as wire_sessions

    wire_observability(services)
    wire_auth(services)
    wire_control(services)
    wire_identity(services)
    wire_identity_data(services)
    wire_sessions(services)
    from hangar.gateway.identity_channel import wire as wire_identity_channel

    wire_identity_channel(services)
    return services
