"""Wire the control plane into ``Services``."""

from __future__ import annotations

import secrets

from hangar.control.context import Context
from hangar.control.prepare import Preparer
from hangar.control.registry import Registry
from hangar.control.service import ControlPlane
from hangar.domain.arns import Place
from hangar.services import Services
from hangar.store import idempotency
from hangar.store.transactions import Store


def wire(services: Services) -> None:
    """Fill ``services.control``; the nextToken key lives in the store so every gateway on it agrees."""
    settings = services.settings
    store = Store(services.engine)
    token_secret = store.write(lambda conn: idempotency.secret(conn, "next_token_key", secrets.token_hex(32)))
    ctx = Context(
        store=store,
        place=Place(account_id=settings.account_id, region=settings.region),
        token_secret=bytes.fromhex(token_secret),
        after_write=lambda: None,
    )
    registry = Registry(settings, store)
    registry.sweep()  # before anything runs: half-written blobs and trees of a crashed process go
    registry.collect_garbage()
    services.registry = registry
    services.control = ControlPlane(ctx, Preparer(settings, registry).prepare)
