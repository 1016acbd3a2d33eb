"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/versions`` must produce exactly these."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Access keys that may sign requests. The secret is stored encrypted (Fernet, key in the data dir) because
# SigV4 verification needs the secret itself, not a hash of it.
credentials = Table(
    "credentials",
    metadata,
    Column("access_key_id", String(128), primary_key=True),
    Column("secret_encrypted", Text, nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("principal_name", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)
