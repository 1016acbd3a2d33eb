"""Alembic environment: always run online, on the engine the caller put in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from hangar.store.tables import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
