"""channel webhooks: URLs told of every channel move, and what each was told

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

``channel_webhook``: a channel's receivers (the URL and the name of the environment variable holding
its signing secret, never the secret), active from one event of the channel's history on.
``webhook_delivery``: one row per event and webhook, claimed before the first attempt and closed as
delivered or failed, so a move is told at most once per receiver and every failure is on record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = 200
ENDPOINT = 500


def upgrade() -> None:
    op.create_table(
        "channel_webhook",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(ENDPOINT), nullable=False),
        sa.Column("secret_env", sa.String(NAME), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("after_event_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channel.id"], name="fk_channel_webhook_channel_id_channel", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_channel_webhook"),
        sa.UniqueConstraint("channel_id", "url", name="uq_channel_webhook_channel_id_url"),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('sending', 'delivered', 'failed')", name="ck_webhook_delivery_status_known"),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["channel_webhook.id"],
            name="fk_webhook_delivery_webhook_id_channel_webhook",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["channel_event.id"], name="fk_webhook_delivery_event_id_channel_event", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_delivery"),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_delivery_webhook_id_event_id"),
    )


def downgrade() -> None:
    op.drop_table("webhook_delivery")
    op.drop_table("channel_webhook")
