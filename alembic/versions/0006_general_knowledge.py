"""general knowledge: a base's probe sets, the figure on every merge, a channel's gate on it, a base's origin

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``replay_set``: the base's own answers to memo's general prompts, mixed into every fine-tuning of it
so that what is trained keeps answering as the base did (one per base and prompt file).
``probe_set``: questions a base answers correctly itself (its blob holds them as JSON lines); the
newest set of a base is what task vectors and merges made from it are asked. ``merge.general``: the
merged model's share of those questions still answered (task vectors keep theirs in ``metrics``).
``channel.min_general``: the least general knowledge a promotion may keep. ``base_model.origin``:
where an imported base came from (a GGUF file's sha256, name, architecture and quantization).

Every new column is nullable, so the ``merge`` table (immutable, with triggers) gains its column in
place on both dialects; SQLite adds the channel's CHECK with the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SHA = 64
MIN_GENERAL_CHECK = "min_general IS NULL OR (min_general >= 0 AND min_general <= 1)"


def upgrade() -> None:
    op.create_table(
        "probe_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("asked", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("probe_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "probe_count >= 0 AND answered >= probe_count AND asked >= answered", name=op.f("ck_probe_set_counts")
        ),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_model.id"], name=op.f("fk_probe_set_base_model_id_base_model"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_set")),
    )
    op.create_table(
        "replay_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("prompts_sha256", sa.String(SHA), nullable=False),
        sa.Column("pair_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("pair_count >= 0", name=op.f("ck_replay_set_pair_count_nonnegative")),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_model.id"], name=op.f("fk_replay_set_base_model_id_base_model"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replay_set")),
        sa.UniqueConstraint("base_model_id", "prompts_sha256", name=op.f("uq_replay_set_base_model_id_prompts_sha256")),
    )
    op.add_column("base_model", sa.Column("origin", sa.JSON(), nullable=True))
    op.add_column("merge", sa.Column("general", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":  # ADD COLUMN may carry its CHECK; no table rebuild
        op.execute(
            "ALTER TABLE channel ADD COLUMN min_general FLOAT "
            f"CONSTRAINT ck_channel_min_general_fraction CHECK ({MIN_GENERAL_CHECK})"
        )
    else:
        op.add_column("channel", sa.Column("min_general", sa.Float(), nullable=True))
        op.create_check_constraint(op.f("ck_channel_min_general_fraction"), "channel", MIN_GENERAL_CHECK)


def downgrade() -> None:
    op.drop_column("channel", "min_general")
    op.drop_column("merge", "general")
    op.drop_column("base_model", "origin")
    op.drop_table("replay_set")
    op.drop_table("probe_set")
