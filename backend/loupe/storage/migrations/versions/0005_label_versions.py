"""saes.version and saes.weights_key; feature_labels.sae_version (labels follow the SAE's weights)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing SAEs are version 1 and their labels were written for it; the weights' digest is filled
    # in when the registry next sees each SAE (no version bump for that first fill)
    with op.batch_alter_table("saes") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("weights_key", sa.String(64), nullable=True))
    with op.batch_alter_table("feature_labels") as batch:
        batch.add_column(sa.Column("sae_version", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("feature_labels") as batch:
        batch.drop_column("sae_version")
    with op.batch_alter_table("saes") as batch:
        batch.drop_column("weights_key")
        batch.drop_column("version")
