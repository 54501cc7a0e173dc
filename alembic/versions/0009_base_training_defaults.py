"""a base's training defaults: the fine-tuning settings a corpus registered on it gets when no flag says otherwise

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``base_model.training_defaults``: the SFTSettings fields chosen for the base (a JSON object; NULL: memo's
own defaults). ``memo base add`` records the knowledge-keeping settings on a base probed with memo's
general-knowledge bank; ``memo base defaults`` changes them. Bases registered before keep NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("base_model", sa.Column("training_defaults", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("base_model", "training_defaults")
