"""session placements: which cluster node serves a session (issue 16), shared by every gateway

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_placements",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("runtime_id", "session_id", name="pk_session_placements"),
    )
    op.create_index("ix_session_placements_node", "session_placements", ["node"])


def downgrade() -> None:
    op.drop_index("ix_session_placements_node", table_name="session_placements")
    op.drop_table("session_placements")
