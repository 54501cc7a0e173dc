"""initial schema: bases, corpora, reflections, task vectors, merges, channels, publications

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Migrations are self-contained: they never import memo's live models.
Immutability is enforced here with triggers (SQLite and PostgreSQL):
merges and their members cannot change, a merge gets no more members than it
declared, channel events and publications are append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SHA = 64
NAME = 200


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "base_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("architecture", sa.String(NAME), nullable=False),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("parameter_count", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(SHA), nullable=False),
        sa.Column("manifest_sha256", sa.String(SHA), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_base_model"),
        sa.UniqueConstraint("name", name="uq_base_model_name"),
        sa.UniqueConstraint("fingerprint", name="uq_base_model_fingerprint"),
        sa.CheckConstraint(
            "parameter_count >= 0", name="ck_base_model_parameter_count_nonnegative"
        ),
    )
    op.create_table(
        "corpus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_corpus"),
        sa.UniqueConstraint("name", name="uq_corpus_name"),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_model.id"],
            name="fk_corpus_base_model_id_base_model", ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("corpus_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("media_type", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_document"),
        sa.UniqueConstraint("corpus_id", "name", name="uq_document_corpus_id_name"),
        sa.ForeignKeyConstraint(
            ["corpus_id"], ["corpus.id"], name="fk_document_corpus_id_corpus", ondelete="RESTRICT"
        ),
        sa.CheckConstraint("size >= 0", name="ck_document_size_nonnegative"),
        sa.CheckConstraint(
            "media_type IN ('txt', 'md', 'jsonl')", name="ck_document_media_type_known"
        ),
    )
    op.create_table(
        "reflection_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("corpus_id", sa.Integer(), nullable=False),
        sa.Column("generator", sa.String(500), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("pair_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_reflection_set"),
        sa.ForeignKeyConstraint(
            ["corpus_id"], ["corpus.id"],
            name="fk_reflection_set_corpus_id_corpus", ondelete="RESTRICT",
        ),
        sa.CheckConstraint("pair_count >= 0", name="ck_reflection_set_pair_count_nonnegative"),
    )
    op.create_table(
        "task_vector",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("corpus_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("reflection_set_id", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("storage_dtype", sa.String(32), nullable=False),
        sa.Column("manifest_sha256", sa.String(SHA), nullable=False),
        sa.Column("norms", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_task_vector"),
        sa.UniqueConstraint("corpus_id", "version", name="uq_task_vector_corpus_id_version"),
        sa.ForeignKeyConstraint(
            ["corpus_id"], ["corpus.id"], name="fk_task_vector_corpus_id_corpus", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_model.id"],
            name="fk_task_vector_base_model_id_base_model", ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["reflection_set_id"], ["reflection_set.id"],
            name="fk_task_vector_reflection_set_id_reflection_set", ondelete="RESTRICT",
        ),
        sa.CheckConstraint("version >= 1", name="ck_task_vector_version_positive"),
    )
    op.create_table(
        "merge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("engine_version", sa.String(64), nullable=False),
        sa.Column("parent_merge_id", sa.Integer(), nullable=True),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("content_key", sa.String(SHA), nullable=False),
        sa.Column("manifest_sha256", sa.String(SHA), nullable=False),
        sa.Column("recall", sa.JSON(), nullable=False),
        sa.Column("retention", sa.JSON(), nullable=False),
        sa.Column("training_cost", sa.JSON(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_merge"),
        sa.UniqueConstraint("content_key", name="uq_merge_content_key"),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_model.id"],
            name="fk_merge_base_model_id_base_model", ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["parent_merge_id"], ["merge.id"], name="fk_merge_parent_merge_id_merge",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("member_count >= 1", name="ck_merge_member_count_positive"),
    )
    op.create_table(
        "merge_member",
        sa.Column("merge_id", sa.Integer(), nullable=False),
        sa.Column("task_vector_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("merge_id", "task_vector_id", name="pk_merge_member"),
        sa.UniqueConstraint("merge_id", "position", name="uq_merge_member_merge_id_position"),
        sa.ForeignKeyConstraint(
            ["merge_id"], ["merge.id"], name="fk_merge_member_merge_id_merge", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["task_vector_id"], ["task_vector.id"],
            name="fk_merge_member_task_vector_id_task_vector", ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "channel",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("current_merge_id", sa.Integer(), nullable=True),
        sa.Column("hub_repo", sa.String(NAME), nullable=True),
        sa.Column("min_retention", sa.Float(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_channel"),
        sa.UniqueConstraint("name", name="uq_channel_name"),
        sa.ForeignKeyConstraint(
            ["current_merge_id"], ["merge.id"], name="fk_channel_current_merge_id_merge",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "min_retention IS NULL OR (min_retention >= 0 AND min_retention <= 1)",
            name="ck_channel_min_retention_fraction",
        ),
    )
    op.create_table(
        "channel_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_merge_id", sa.Integer(), nullable=True),
        sa.Column("to_merge_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_channel_event"),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channel.id"], name="fk_channel_event_channel_id_channel",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["from_merge_id"], ["merge.id"], name="fk_channel_event_from_merge_id_merge",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_merge_id"], ["merge.id"], name="fk_channel_event_to_merge_id_merge",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "action IN ('create', 'promote', 'rollback', 'configure')",
            name="ck_channel_event_action_known",
        ),
    )
    op.create_table(
        "publication",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merge_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("repo_id", sa.String(NAME), nullable=False),
        sa.Column("revision", sa.String(NAME), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(NAME), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_publication"),
        sa.ForeignKeyConstraint(
            ["merge_id"], ["merge.id"], name="fk_publication_merge_id_merge", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channel.id"], name="fk_publication_channel_id_channel",
            ondelete="RESTRICT",
        ),
    )
    _create_triggers()


# --- immutability triggers ------------------------------------------------------------

# (trigger name, table, event, message)
_FROZEN = [
    ("merge_no_update", "merge", "UPDATE", "merge rows are immutable"),
    ("merge_no_delete", "merge", "DELETE", "merge rows are immutable"),
    ("merge_member_no_update", "merge_member", "UPDATE", "merge members are fixed once written"),
    ("merge_member_no_delete", "merge_member", "DELETE", "merge members are fixed once written"),
    ("channel_event_no_update", "channel_event", "UPDATE", "channel history is append-only"),
    ("channel_event_no_delete", "channel_event", "DELETE", "channel history is append-only"),
    ("publication_no_update", "publication", "UPDATE", "publications are append-only"),
    ("publication_no_delete", "publication", "DELETE", "publications are append-only"),
]
_MEMBERS_FULL = "a merge gets no more members than its member_count"


def _create_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name, table, event, message in _FROZEN:
            op.execute(
                f'CREATE TRIGGER {name} BEFORE {event} ON "{table}" '
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        op.execute(
            "CREATE TRIGGER merge_member_count BEFORE INSERT ON merge_member "
            "WHEN (SELECT count(*) FROM merge_member WHERE merge_id = NEW.merge_id) >= "
            '(SELECT member_count FROM "merge" WHERE id = NEW.merge_id) '
            f"BEGIN SELECT RAISE(ABORT, '{_MEMBERS_FULL}'); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION memo_refuse_change() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation'; "
            "END $$ LANGUAGE plpgsql"
        )
        for name, table, event, message in _FROZEN:
            op.execute(
                f'CREATE TRIGGER {name} BEFORE {event} ON "{table}" FOR EACH ROW '
                f"EXECUTE FUNCTION memo_refuse_change('{message}')"
            )
        op.execute(
            "CREATE FUNCTION memo_check_member_count() RETURNS trigger AS $$ BEGIN "
            "IF (SELECT count(*) FROM merge_member WHERE merge_id = NEW.merge_id) >= "
            '(SELECT member_count FROM "merge" WHERE id = NEW.merge_id) THEN '
            f"RAISE EXCEPTION '{_MEMBERS_FULL}' USING ERRCODE = 'integrity_constraint_violation'; "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER merge_member_count BEFORE INSERT ON merge_member FOR EACH ROW "
            "EXECUTE FUNCTION memo_check_member_count()"
        )
    # Other dialects: immutability is enforced by the service layer only.


def _drop_triggers() -> None:
    dialect = op.get_bind().dialect.name
    names = [(name, table) for name, table, _, _ in _FROZEN] + [
        ("merge_member_count", "merge_member")
    ]
    if dialect == "sqlite":
        for name, _ in names:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for name, table in names:
            op.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
        op.execute("DROP FUNCTION IF EXISTS memo_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS memo_check_member_count()")


def downgrade() -> None:
    _drop_triggers()
    for table in (
        "publication",
        "channel_event",
        "channel",
        "merge_member",
        "merge",
        "task_vector",
        "reflection_set",
        "document",
        "corpus",
        "base_model",
    ):
        op.drop_table(table)
