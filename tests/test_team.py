"""Two users, one registry: two homes (two caches, as two machines have) sharing one PostgreSQL
database and one S3 bucket."""

from __future__ import annotations

import pytest

from registry import Conflict, Registry
from tests.support.blobs import shas
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector

pytestmark = pytest.mark.postgres


@pytest.fixture
def team(postgres, s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    database, bucket = postgres.create_database(), s3_server.create_bucket()
    a = Registry.init(tmp_path / "alice", database_url=database, blobs=bucket)
    b = Registry.init(tmp_path / "bob", database_url=database, blobs=bucket)
    yield a, b
    a.close()
    b.close()


def _files(directory) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_two_users_share_one_registry(team, tiny_model, docs, tmp_path):
    alice, bob = team
    alice.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
    for seed, name in enumerate(("atlas", "harbor", "glass")):
        register_random_task_vector(alice, name, docs, tmp_path, seed)
    first = alice.merge(["atlas"], strategy="ties", channel="production", progress=False, evaluate=False)

    # Bob sees what Alice recorded, and reads her blobs from the bucket into his own cache.
    assert [c.name for c in bob.list_corpora()] == ["atlas", "glass", "harbor"]
    assert bob.get_channel("production").current_merge_id == first.id
    assert _files(bob.export(first.id, tmp_path / "bob-1")) == _files(alice.export(first.id, tmp_path / "alice-1"))
    second = bob.merge(["atlas", "harbor"], strategy="ties", channel="production", progress=False, evaluate=False)
    assert alice.get_channel("production").current_merge_id == second.id

    # Alice rolls back while Bob merges: Bob's merge is recorded, its promotion is a conflict.
    def alice_rolls_back(_record) -> None:
        alice.rollback("production", reason="second forgot too much")

    with pytest.raises(Conflict, match="moved from merge") as refused:
        bob.merge(
            ["atlas", "harbor", "glass"],
            strategy="ties",
            channel="production",
            progress=False,
            evaluate=False,
            on_recorded=alice_rolls_back,
        )
    assert len(str(refused.value).splitlines()) == 1
    third = bob.list_merges()[-1]
    assert third.corpora == "atlas@v1 glass@v1 harbor@v1" and third.parent_merge_id == second.id
    assert bob.get_channel("production").current_merge_id == first.id  # Alice's rollback stands

    # Bob promotes it after all; the history is one chain, seen the same from both homes.
    bob.promote(third.id, "production", reason="after looking at the log")
    log = alice.log("production")
    assert [e.action for e in log] == ["promote", "promote", "rollback", "promote"]
    assert all(e.from_merge_id == prev.to_merge_id for prev, e in zip(log, log[1:]))
    assert [e.id for e in bob.log("production")] == [e.id for e in log]

    # Nothing is lost: every merge reads whole from either home, and gc finds nothing to take.
    assert alice.verify().ok and bob.verify().ok
    assert bob.gc(dry_run=False, grace_seconds=0).removed == ()
    for merge in (first, second, third):
        assert _files(alice.export(merge.id, tmp_path / f"a-{merge.id}")) == _files(
            bob.export(merge.id, tmp_path / f"b-{merge.id}")
        )
    assert shas(alice.store) == shas(bob.store)
