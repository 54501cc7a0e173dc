"""The database itself refuses to change a merge, its members or the channel history."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from registry.store.schema import (
    BaseModelRow,
    ChannelEventRow,
    ChannelRow,
    CorpusRow,
    MergeMemberRow,
    MergeRow,
    PublicationRow,
    TaskVectorRow,
)

SHA = "a" * 64


@pytest.fixture
def merged(registry):
    """One base, two task vectors, a merge of one member, a channel event, a publication."""
    with registry.db.write() as s:
        base = BaseModelRow(
            name="b",
            source="/x",
            architecture="A",
            dtype="float32",
            parameter_count=1,
            fingerprint=SHA,
            manifest_sha256=SHA,
        )
        s.add(base)
        s.flush()
        corpus = CorpusRow(name="c", base_model_id=base.id)
        s.add(corpus)
        s.flush()
        tvs = [
            TaskVectorRow(
                corpus_id=corpus.id,
                version=v,
                base_model_id=base.id,
                method="full",
                storage_dtype="float32",
                manifest_sha256=SHA,
            )
            for v in (1, 2)
        ]
        s.add_all(tvs)
        s.flush()
        merge = MergeRow(
            base_model_id=base.id,
            strategy="ties",
            method="ties",
            engine_version="0",
            member_count=1,
            content_key=SHA,
            manifest_sha256=SHA,
        )
        s.add(merge)
        s.flush()
        s.add(MergeMemberRow(merge_id=merge.id, task_vector_id=tvs[0].id, position=0, weight=1.0))
        channel = ChannelRow(name="production", current_merge_id=merge.id)
        s.add(channel)
        s.flush()
        s.add(ChannelEventRow(channel_id=channel.id, action="promote", to_merge_id=merge.id))
        s.add(PublicationRow(merge_id=merge.id, repo_id="o/r", revision="main", commit_sha="c" * 40))
        return {"merge": merge.id, "tv2": tvs[1].id}


REFUSED = [
    ("UPDATE \"merge\" SET strategy = 'warm'", "merge rows are immutable"),
    ('DELETE FROM "merge"', "merge rows are immutable"),
    ("UPDATE merge_member SET weight = 2", "merge members are fixed"),
    ("DELETE FROM merge_member", "merge members are fixed"),
    ("UPDATE channel_event SET reason = 'rewritten'", "append-only"),
    ("DELETE FROM channel_event", "append-only"),
    ("UPDATE publication SET commit_sha = 'x'", "append-only"),
    ("DELETE FROM publication", "append-only"),
]


@pytest.mark.parametrize(("statement", "message"), REFUSED, ids=[s for s, _ in REFUSED])
def test_database_refuses(registry, merged, statement, message):
    with pytest.raises(DatabaseError, match=message), registry.db.write() as s:
        s.execute(text(statement))


def test_no_member_beyond_member_count(registry, merged):
    with pytest.raises(DatabaseError, match="no more members"), registry.db.write() as s:
        s.add(MergeMemberRow(merge_id=merged["merge"], task_vector_id=merged["tv2"], position=1, weight=1.0))


def test_channel_pointer_may_move(registry, merged):
    """Channels are mutable pointers; their history is what is append-only."""
    with registry.db.write() as s:
        s.execute(text("UPDATE channel SET current_merge_id = NULL"))
    with registry.db.read() as s:
        assert s.execute(text("SELECT current_merge_id FROM channel")).scalar() is None


def test_foreign_keys_are_enforced(registry):
    with pytest.raises(DatabaseError), registry.db.write() as s:
        s.add(CorpusRow(name="orphan", base_model_id=12345))
