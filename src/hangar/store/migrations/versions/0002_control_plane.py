"""control plane: runtimes, versions, endpoints, tags, idempotency tokens, control secrets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "runtimes",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(48), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("runtime_id", name="pk_runtimes"),
        sa.UniqueConstraint("name", name="uq_runtimes_name"),
    )
    op.create_table(
        "runtime_versions",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        *_timestamps(),
        sa.Column("code_dir", sa.Text(), nullable=True),
        sa.Column("env_dir", sa.Text(), nullable=True),
        sa.Column("entry_point", sa.JSON(), nullable=True),
        sa.Column("content_hash", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("runtime_id", "version", name="pk_runtime_versions"),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.runtime_id"], name="fk_runtime_versions_runtime_id_runtimes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_runtime_versions_status", "runtime_versions", ["status"])
    op.create_table(
        "runtime_endpoints",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(48), nullable=False),
        sa.Column("endpoint_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("live_version", sa.Integer(), nullable=True),
        sa.Column("target_version", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("runtime_id", "name", name="pk_runtime_endpoints"),
        sa.UniqueConstraint("endpoint_id", name="uq_runtime_endpoints_endpoint_id"),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.runtime_id"], name="fk_runtime_endpoints_runtime_id_runtimes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_runtime_endpoints_status", "runtime_endpoints", ["status"])
    op.create_table(
        "resource_tags",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("endpoint_name", sa.String(48), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("runtime_id", "endpoint_name", "key", name="pk_resource_tags"),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.runtime_id"], name="fk_resource_tags_runtime_id_runtimes", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "idempotency_tokens",
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("client_token", sa.String(256), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("operation", "client_token", name="pk_idempotency_tokens"),
    )
    op.create_table(
        "control_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_control_secrets"),
    )


def downgrade() -> None:
    op.drop_table("control_secrets")
    op.drop_table("idempotency_tokens")
    op.drop_table("resource_tags")
    op.drop_index("ix_runtime_endpoints_status", table_name="runtime_endpoints")
    op.drop_table("runtime_endpoints")
    op.drop_index("ix_runtime_versions_status", table_name="runtime_versions")
    op.drop_table("runtime_versions")
    op.drop_table("runtimes")
