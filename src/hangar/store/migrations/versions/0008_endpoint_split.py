"""endpoint splits: Hangar's traffic split of an endpoint between two versions (domain/split.py)

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"  # 0007 was reserved for session storage, which needed no table
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_splits",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("endpoint_name", sa.String(48), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("runtime_id", "endpoint_name", name="pk_endpoint_splits"),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.runtime_id"], name="fk_endpoint_splits_runtime_id_runtimes", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("endpoint_splits")
