"""identity: workload identities, API-key and OAuth2 credential providers (secrets sealed), identity tags

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "workload_identities",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("allowed_return_urls", sa.JSON(), nullable=False),
        sa.Column("runtime_id", sa.String(128), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="pk_workload_identities"),
        sa.ForeignKeyConstraint(
            ["runtime_id"],
            ["runtimes.runtime_id"],
            name="fk_workload_identities_runtime_id_runtimes",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "api_key_providers",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("api_key_sealed", sa.LargeBinary(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="pk_api_key_providers"),
    )
    op.create_table(
        "oauth2_providers",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("client_secret_sealed", sa.LargeBinary(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="pk_oauth2_providers"),
    )
    op.create_table(
        "identity_tags",
        sa.Column("resource_arn", sa.String(1011), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("resource_arn", "key", name="pk_identity_tags"),
    )
    # Runtimes made before this revision get the workload identity every runtime now has.
    op.execute(
        "INSERT INTO workload_identities (name, allowed_return_urls, runtime_id, created_at, updated_at) "
        "SELECT runtime_id, '[]', runtime_id, created_at, updated_at FROM runtimes"
    )


def downgrade() -> None:
    op.drop_table("identity_tags")
    op.drop_table("oauth2_providers")
    op.drop_table("api_key_providers")
    op.drop_table("workload_identities")
