"""hub endpoints: a channel's linked repo and a publication name the Hub they live on

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

A repo id alone is ambiguous once one registry publishes to more than one
Hub (huggingface.co, a private Hub, a test server). Plain ADD COLUMN (no
table rebuild), so the append-only triggers on publication stay in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("channel", sa.Column("hub_endpoint", sa.String(500), nullable=True))
    op.add_column("publication", sa.Column("endpoint", sa.String(500), nullable=True))


def downgrade() -> None:
    # In place (SQLite >= 3.35 drops columns without a rebuild), so the triggers stay.
    op.drop_column("publication", "endpoint")
    op.drop_column("channel", "hub_endpoint")
