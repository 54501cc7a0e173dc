"""generator calls: the reflection generator's validated replies, cached by content

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

One row per (prompt version, model, input) hash, naming the reply's blob and
its token counts. A reflection run writes a row as each call returns, so an
interrupted run resumes without calling the generator again for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SHA = 64


def upgrade() -> None:
    op.create_table(
        "generator_call",
        sa.Column("cache_key", sa.String(SHA), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("reply_sha256", sa.String(SHA), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name="pk_generator_call"),
    )


def downgrade() -> None:
    op.drop_table("generator_call")
