"""Wire the session manager (and its sandbox backend) into ``Services``."""

from __future__ import annotations

from hangar.services import Services


def wire(services: Services) -> None:
    from hangar.sandbox import select_backend
    from hangar.sessions.manager import SessionManager

    services.sessions = SessionManager(services.settings, select_backend(services.settings))
