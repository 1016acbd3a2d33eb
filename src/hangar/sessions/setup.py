"""Wire the session manager (and its sandbox backend) into ``Services``."""

from __future__ import annotations

from hangar.services import Services


def wire(services: Services) -> None:
    """Nothing yet: filled by the data-plane work."""
