"""blob leases: what running commands are storing, so `memo gc` never takes it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

A process that stores blobs first records each one under its lease (one row per
process and database), and renews the lease while it runs. ``memo gc`` spares
every blob under a live lease: one renewed within its time-to-live whose process
is not known to be dead. Leases are working state, not history: they are deleted
when their process closes the registry, and by gc once expired.

Also ``schema_info``: facts about the schema itself, so far the memo version
that last migrated the database (an older memo that finds a newer schema
names the version to install).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SHA = 64


def upgrade() -> None:
    op.create_table(
        "blob_lease",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(500), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ttl_seconds > 0", name="ck_blob_lease_ttl_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_blob_lease"),
    )
    op.create_table(
        "blob_lease_item",
        sa.Column("lease_id", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.ForeignKeyConstraint(
            ["lease_id"], ["blob_lease.id"], name="fk_blob_lease_item_lease_id_blob_lease", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lease_id", "sha256", name="pk_blob_lease_item"),
    )
    op.create_index("ix_blob_lease_item_sha256", "blob_lease_item", ["sha256"])
    op.create_table(
        "schema_info",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_schema_info"),
    )


def downgrade() -> None:
    op.drop_table("schema_info")
    op.drop_index("ix_blob_lease_item_sha256", table_name="blob_lease_item")
    op.drop_table("blob_lease_item")
    op.drop_table("blob_lease")
