"""gate refusals: a channel's history also records the promotions its retention gate refused

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

``channel_event.action`` may now be ``refused`` (the channel did not move; the
event names the merge that was refused and why). PostgreSQL swaps the CHECK
constraint in place. SQLite cannot alter a constraint, so the table is rebuilt:
its append-only triggers are dropped, the rows copied in order, and the
triggers made again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHECK = "ck_channel_event_action_known"
OLD = "action IN ('create', 'promote', 'rollback', 'configure')"
NEW = "action IN ('create', 'promote', 'rollback', 'configure', 'refused')"
TRIGGERS = (("channel_event_no_update", "UPDATE"), ("channel_event_no_delete", "DELETE"))
COLUMNS = "id, channel_id, action, from_merge_id, to_merge_id, reason, forced, created_at"


def upgrade() -> None:
    _set_check(NEW)


def downgrade() -> None:
    _drop_triggers()
    op.execute("DELETE FROM channel_event WHERE action = 'refused'")
    _create_triggers()
    _set_check(OLD)


def _set_check(condition: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(CHECK, "channel_event", type_="check")
        op.create_check_constraint(op.f(CHECK), "channel_event", condition)
        return
    _drop_triggers()
    op.create_table("channel_event_rebuilt", *_columns(), sa.CheckConstraint(condition, name=op.f(CHECK)))
    op.execute(f"INSERT INTO channel_event_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM channel_event ORDER BY id")
    op.drop_table("channel_event")
    op.rename_table("channel_event_rebuilt", "channel_event")
    _create_triggers()


def _columns() -> list[sa.SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_merge_id", sa.Integer(), nullable=True),
        sa.Column("to_merge_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_event")),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channel.id"], name=op.f("fk_channel_event_channel_id_channel"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["from_merge_id"], ["merge.id"], name=op.f("fk_channel_event_from_merge_id_merge"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["to_merge_id"], ["merge.id"], name=op.f("fk_channel_event_to_merge_id_merge"), ondelete="RESTRICT"
        ),
    ]


def _drop_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name, _ in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name, _ in TRIGGERS:
            op.execute(f'DROP TRIGGER IF EXISTS {name} ON "channel_event"')


def _create_triggers() -> None:
    message = "channel history is append-only"
    for name, event in TRIGGERS:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(
                f'CREATE TRIGGER {name} BEFORE {event} ON "channel_event" '
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        else:
            op.execute(
                f'CREATE TRIGGER {name} BEFORE {event} ON "channel_event" FOR EACH ROW '
                f"EXECUTE FUNCTION memo_refuse_change('{message}')"
            )
