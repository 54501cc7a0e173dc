"""`memo gc` never takes what a running command is storing: blobs are claimed under the process's
lease before they are stored, gc deletes under a lock sparing live leases, and a row is recorded
only over blobs that are present. Run on SQLite + a local store and on PostgreSQL + S3, grace 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from registry import Registry
from registry.operations import merge_making
from registry.store.errors import NotFound
from registry.store.leases import BlobLeases
from registry.store.schema import BlobLeaseRow, MergeRow
from tests.conftest import memo_subprocess_env
from tests.support.snapshot import count
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector


@pytest.fixture
def homes(registry, tiny_model, docs, tmp_path, database_url, blobs_url):
    """The registry with two task vectors, and a second user of the same database and blobs (another
    home beside PostgreSQL + S3; the same home opened again, as another process does, beside SQLite)."""
    registry.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
    for seed, name in enumerate(("atlas", "harbor")):
        register_random_task_vector(registry, name, docs, tmp_path, seed)
    if database_url:
        other = Registry.init(tmp_path / "other-home", database_url=database_url, blobs=blobs_url)
    else:
        other = Registry.open(registry.home)
    yield registry, other
    other.close()


def _merge_with(reg: Registry, monkeypatch, meanwhile) -> object:
    """Merge atlas + harbor, running ``meanwhile()`` where the merge evaluates its stored output."""

    def evaluate(ws, manifest, base, members, device):
        meanwhile(manifest)
        return None

    monkeypatch.setattr(merge_making, "_retention", evaluate)
    return reg.merge(["atlas", "harbor"], strategy="ties", progress=False, evaluate=True)


def _whole(reg: Registry, merge_id: int, out: Path) -> None:
    report = reg.verify()
    assert report.ok, report.problems
    exported = reg.export(merge_id, out)
    assert (exported / "model.safetensors").stat().st_size > 0


def test_another_users_gc_during_a_merge_takes_nothing_it_is_storing(homes, monkeypatch, tmp_path):
    reg, other = homes
    reports = []
    record = _merge_with(reg, monkeypatch, lambda _m: reports.append(other.gc(dry_run=False, grace_seconds=0)))
    (report,) = reports
    assert report.removed == () and report.kept_leased >= 3  # the merge's manifest, weights, config...
    _whole(reg, record.id, tmp_path / "out")
    _whole(other, record.id, tmp_path / "out-other")
    assert other.gc(dry_run=False, grace_seconds=0).removed == ()  # recorded now: referenced


def test_a_gc_process_on_the_same_home_during_evaluation_takes_nothing(homes, monkeypatch, tmp_path, database_url):
    reg, _ = homes
    env = memo_subprocess_env(reg.home, database_url)
    memo = str(Path(sys.executable).parent / "memo")
    outputs = []

    def gc_process(_manifest) -> None:
        done = subprocess.run([memo, "gc", "--yes", "--grace", "0", "--json"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)

    record = _merge_with(reg, monkeypatch, gc_process)
    assert '"removed": []' in outputs[0]
    _whole(reg, record.id, tmp_path / "out")


def test_a_row_is_never_recorded_over_a_blob_that_left_the_store(homes, monkeypatch):
    reg, other = homes
    # What a gc that ignored the lease (or a user deleting by hand) would do mid-merge.
    with pytest.raises(NotFound, match="left the store before it was recorded") as refused:
        _merge_with(reg, monkeypatch, lambda manifest: other.store.delete(manifest))
    assert len(str(refused.value).splitlines()) == 1
    assert count(reg, MergeRow) == 0
    assert reg.gc(dry_run=False, grace_seconds=0).removed != ()  # what it left is collectable
    assert reg.verify().ok


def test_an_expired_lease_protects_nothing_and_is_dropped(homes):
    reg, other = homes
    # A process that stopped renewing. The database's clock counts whole seconds on SQLite, so a lease
    # of 3 s lasts at least 2: time for the checks below on a slow machine before it expires.
    stalled = BlobLeases(other.db, ttl_seconds=3)
    other.store.claim = stalled.claim
    orphan = other.store.put_bytes(b"stored by a process that then hung")
    assert reg.gc(dry_run=True, grace_seconds=0).removed == ()
    assert reg.gc(dry_run=True, grace_seconds=0).kept_leased == 1
    time.sleep(4.2)  # past its time-to-live, whole seconds included
    assert reg.gc(dry_run=False, grace_seconds=0).removed == (orphan,)
    assert stalled.id not in _leases(reg)
    stalled.renew()  # it wakes up: its lease is made again, with what it had claimed
    assert stalled.id in _leases(reg) and reg.gc(dry_run=True, grace_seconds=0).kept_leased == 0
    stalled.release()
    assert stalled.id not in _leases(reg)


def _leases(reg: Registry) -> set[str]:
    with reg.db.read() as session:
        return set(session.scalars(select(BlobLeaseRow.id)))


def test_a_killed_process_lease_is_seen_dead_at_once(registry, database_url, tmp_path):
    script = (
        "import os, signal, sys\n"
        "from registry import Registry\n"
        "reg = Registry.open(sys.argv[1], database_url=sys.argv[2] or None)\n"
        "print(reg.store.put_bytes(b'half of a command'), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, **memo_subprocess_env(registry.home, database_url))
    done = subprocess.run(
        [sys.executable, "-c", script, str(registry.home), database_url or ""], env=env, capture_output=True, text=True
    )
    orphan = done.stdout.strip()
    assert done.returncode == -9 and registry.store.exists(orphan)
    assert len(_leases(registry)) == 1
    assert registry.gc(dry_run=False, grace_seconds=0).removed == (orphan,)
    assert _leases(registry) == set()


def test_a_closed_registry_leaves_no_lease(registry):
    registry.store.put_bytes(b"stored, then the command ended")
    assert _leases(registry) == {registry.ws.leases.id}
    registry.ws.leases.release()
    assert _leases(registry) == set()


def test_the_lease_is_renewed_in_the_background(registry, caplog):
    """The renewal thread uses its own connections (SQLite and PostgreSQL alike) and warns of nothing."""
    leases = BlobLeases(registry.db, ttl_seconds=60, renew_seconds=0.2)
    registry.store.claim = leases.claim
    registry.store.put_bytes(b"a long command's first blob")
    with registry.db.read() as session:
        first = session.scalar(select(BlobLeaseRow.renewed_at).where(BlobLeaseRow.id == leases.id))
    time.sleep(2.5)  # the database's clock counts whole seconds on SQLite
    with registry.db.read() as session:
        later = session.scalar(select(BlobLeaseRow.renewed_at).where(BlobLeaseRow.id == leases.id))
    leases.release()
    assert later > first and "cannot renew" not in caplog.text
