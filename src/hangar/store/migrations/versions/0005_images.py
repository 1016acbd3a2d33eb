"""images: Hangar's registry (repositories, manifests, tags) and the image of a container version

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_repositories",
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_image_repositories"),
    )
    op.create_table(
        "image_manifests",
        sa.Column("repository", sa.String(256), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("artifact_type", sa.String(255), nullable=True),
        sa.Column("subject", sa.String(71), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("image_size", sa.BigInteger(), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "digest", name="pk_image_manifests"),
        sa.ForeignKeyConstraint(
            ["repository"],
            ["image_repositories.name"],
            name="fk_image_manifests_repository_image_repositories",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "image_tags",
        sa.Column("repository", sa.String(256), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "tag", name="pk_image_tags"),
        sa.ForeignKeyConstraint(
            ["repository", "digest"],
            ["image_manifests.repository", "image_manifests.digest"],
            name="fk_image_tags_repository_image_manifests",
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("runtime_versions") as batch:
        batch.add_column(sa.Column("image", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runtime_versions") as batch:
        batch.drop_column("image")
    op.drop_table("image_tags")
    op.drop_table("image_manifests")
    op.drop_table("image_repositories")
