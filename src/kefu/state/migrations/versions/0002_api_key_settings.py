"""api_key_settings: facts about the key store itself, first the fingerprint of the pepper replicas must share.

Revision ID: 0002_api_key_settings
Revises: 0001_initial
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_api_key_settings"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("api_key_settings",
                    sa.Column("name", sa.String(length=64), nullable=False),
                    sa.Column("value", sa.String(), nullable=False),
                    sa.PrimaryKeyConstraint("name"))


def downgrade() -> None:
    op.drop_table("api_key_settings")
