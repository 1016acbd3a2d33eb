"""Build the control plane and Hangar's container registry."""

from __future__ import annotations

import secrets

from sqlalchemy.engine import Engine

from hangar.config import Settings
from hangar.control.context import Context
from hangar.control.prepare import Preparer
from hangar.control.registry import Registry
from hangar.control.service import ControlPlane
from hangar.domain.arns import Place
from hangar.store import idempotency
from hangar.store.transactions import Store


def build_control(settings: Settings, engine: Engine) -> tuple[ControlPlane, Registry]:
    """The control plane and the registry; the nextToken key lives in the store so every gateway on it agrees."""
    store = Store(engine)
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
    return ControlPlane(ctx, Preparer(settings, registry).prepare), registry
