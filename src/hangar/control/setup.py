"""Wire the control plane into ``Services``."""

from __future__ import annotations

from hangar.services import Services


def wire(services: Services) -> None:
    """Nothing yet: filled by the control-plane work."""
