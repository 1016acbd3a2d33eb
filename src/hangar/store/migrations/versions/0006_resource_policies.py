"""resource policies: PutResourcePolicy documents of runtimes and endpoints

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_policies",
        sa.Column("runtime_id", sa.String(128), nullable=False),
        sa.Column("endpoint_name", sa.String(48), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("runtime_id", "endpoint_name", name="pk_resource_policies"),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.runtime_id"], name="fk_resource_policies_runtime_id_runtimes", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("resource_policies")
