"""saes, sae_features, feature_labels

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saes",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("model_id", sa.String(100), nullable=False, index=True),
        sa.Column("hook_name", sa.String(200), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("d_in", sa.Integer, nullable=False),
        sa.Column("d_sae", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("dashboards", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sae_features",
        sa.Column("sae_id", sa.String(200), primary_key=True),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("density", sa.Float, nullable=False),
        sa.Column("max_activation", sa.Float, nullable=False),
        sa.Column("mean_activation", sa.Float, nullable=False),
        sa.Column("capacity", sa.Float, nullable=False),
        sa.Column("auto_label", sa.Text, nullable=False),
        sa.Column("top_domain", sa.String(64), nullable=True),
        sa.Column("top_domain_share", sa.Float, nullable=True),
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_index("ix_sae_features_density", "sae_features", ["sae_id", "density"])
    op.create_table(
        "feature_labels",
        sa.Column("sae_id", sa.String(200), primary_key=True),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feature_labels")
    op.drop_index("ix_sae_features_density", "sae_features")
    op.drop_table("sae_features")
    op.drop_table("saes")
