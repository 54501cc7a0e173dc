"""sequential training: the merge a task vector was trained onto

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

``task_vector.start_merge_id``: the merge whose model a task vector's training started from (a corpus
trained onto a channel's model, every earlier member rehearsed); NULL for one trained from the base.
Its deltas are still taken against the base, so it merges like any other task vector, and the
``sequential`` strategy serves it alone (base + deltas) in place of its start's members plus it.

SQLite adds the column with its foreign key in place (ADD COLUMN may carry a REFERENCES clause) and
drops it by rebuilding the table (DROP COLUMN refuses a column in a foreign key). The key has no ON
DELETE action: merge rows are never deleted (a trigger refuses it), and SQLite does not read an action
back from a column's own REFERENCES clause.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FK = "fk_task_vector_start_merge_id_merge"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE task_vector ADD COLUMN start_merge_id INTEGER "
            f"CONSTRAINT {FK} REFERENCES merge (id)"
        )
    else:
        op.add_column("task_vector", sa.Column("start_merge_id", sa.Integer(), nullable=True))
        op.create_foreign_key(op.f(FK), "task_vector", "merge", ["start_merge_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("task_vector") as batch:
            batch.drop_column("start_merge_id")
    else:
        op.drop_constraint(op.f(FK), "task_vector", type_="foreignkey")
        op.drop_column("task_vector", "start_merge_id")
