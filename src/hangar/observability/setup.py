"""Wire observability into ``Services``: one metrics registry per server (before the components that report to it)."""

from __future__ import annotations

from hangar.observability.metrics import Metrics
from hangar.services import Services


def wire(services: Services) -> None:
    services.metrics = Metrics()
