"""identity tokens: the resource-token cache and pending USER_FEDERATION sessions (tokens sealed)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _foreign_keys(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["workload"],
            ["workload_identities.name"],
            name=f"fk_{table}_workload_workload_identities",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["provider"], ["oauth2_providers.name"], name=f"fk_{table}_provider_oauth2_providers", ondelete="CASCADE"
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "identity_tokens",
        sa.Column("workload", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("flow", sa.String(32), nullable=False),
        sa.Column("scopes_key", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("access_token_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workload", "user_id", "provider", "flow", "scopes_key", name="pk_identity_tokens"),
        *_foreign_keys("identity_tokens"),
    )
    op.create_table(
        "identity_oauth_sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("workload", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("verifier_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=True),
        sa.Column("custom_state_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("access_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_identity_oauth_sessions"),
        sa.UniqueConstraint("state_hash", name="uq_identity_oauth_sessions_state_hash"),
        *_foreign_keys("identity_oauth_sessions"),
    )


def downgrade() -> None:
    op.drop_table("identity_oauth_sessions")
    op.drop_table("identity_tokens")
