"""The composition root: one ``Services`` object per process, built from the settings.

``build_services`` builds every component once, in dependency order, each from the packages' ``build_*`` functions
with its dependencies passed explicitly (no package reaches into ``Services``). The gateway reaches every use case
through the result (``request.app.state.services``); tests can start a whole server in-process with
``create_app(Settings(...))``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
    from hangar.observability.tracing import Tracing
    from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar")


class Component(Protocol):
    """Something with background work: started once the server accepts work, stopped before the store closes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    engine: Engine
    metrics: Metrics
    credentials: CredentialStore
    sigv4: SigV4Verifier
    jwt: JwtAuthorizer
    control: ControlPlane
    registry: Registry  # Hangar's container registry (ECR API and /v2)
    identity: Identity
    identity_data: IdentityDataPlane
    sessions: SessionManager
    # The sandboxes' identity endpoint and credentials. Built last, from this object (its handlers reach the
    # services as the gateway's do); None where the sandbox backend cannot give sandboxes one (process).
    identity_channel: IdentityChannel | None = None
    tracing: Tracing | None = None  # OpenTelemetry traces of data-plane calls (observability/tracing.py)

    def components(self) -> list[Component]:
        """Start order: the control plane (resumes builds), identity, the sandboxes' identity channel (an agent may
        fetch credentials as it imports), then sessions (which start templates and pools)."""
        ordered: list[Component] = [self.control, self.identity, self.identity_data]
        if self.identity_channel is not None:
            ordered.append(self.identity_channel)
        ordered.append(self.sessions)
        if self.tracing is not None:  # stops last: the spans of calls ended by the shutdown are flushed
            ordered.insert(0, self.tracing)
        return ordered

    async def start(self) -> None:
        for component in self.components():
            await component.start()

    async def stop(self) -> None:
        """Stop in reverse order: sessions end before the store closes; one failure does not skip the rest."""
        for component in reversed(self.components()):
            try:
                await component.stop()
            except Exception:
                log.exception("error while stopping %s", type(component).__name__)
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    """Create the data dir, open and migrate the store, build every component once."""
    from hangar.auth.setup import build_auth
    from hangar.cluster.remote import build_cluster_sessions
    from hangar.control.setup import build_control
    from hangar.gateway.identity_channel import build_identity_channel
    from hangar.identity.data_setup import build_identity_data
    from hangar.identity.setup import build_identity
    from hangar.observability.metrics import Metrics
    from hangar.observability.tracing import build_tracing
    from hangar.sessions.setup import build_sessions
    from hangar.store.engine import open_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_engine(settings.resolved_database_url)
    metrics = Metrics()
    credentials, sigv4, jwt = build_auth(settings, engine)
    control, registry = build_control(settings, engine)
    identity = build_identity(settings, engine)

    async def authorize_jwt(token: str, authorizer: dict[str, Any]) -> str | None:
        return (await jwt.authorize(token, authorizer)).subject

    identity_data = build_identity_data(settings.data_dir, identity, authorize_jwt, control.jwt_authorizer_of)
    services = Services(
        settings=settings,
        engine=engine,
        metrics=metrics,
        credentials=credentials,
        sigv4=sigv4,
        jwt=jwt,
        control=control,
        registry=registry,
        identity=identity,
        identity_data=identity_data,
        sessions=build_cluster_sessions(settings, engine, metrics)  # sandboxes on `hangar node`s (docs/cluster.md)
        if settings.cluster
        else build_sessions(settings, metrics, control.served_targets),
    )
    services.identity_channel = build_identity_channel(services)
    services.tracing = build_tracing(settings)
    return services
