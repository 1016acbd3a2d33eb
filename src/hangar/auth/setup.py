"""Wire the inbound-auth components into ``Services``."""

from __future__ import annotations

from hangar.services import Services


def wire(services: Services) -> None:
    """Nothing yet: the SigV4 verifier and credential store arrive with the inbound-auth work."""
