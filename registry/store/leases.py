"""Blob leases: how a running command keeps `memo gc` (on this machine or another) off what it
is storing before a row references it.

The protocol, in three parts:

- **Claim before store.** A process that stores a blob first records its sha256 under the
  process's lease (one ``blob_lease`` row, created at the first claim, renewed by a background
  thread while the process lives, deleted when it closes the registry), and only then checks
  whether the blob is already there or writes it (:meth:`BlobLeases.claim`, the stores'
  ``claim`` hook).
- **gc deletes under the lock, sparing live leases.** ``memo gc`` deletes in small batches, each
  in a write transaction that holds the gc lock and re-reads the leases and direct references of
  the batch first (:func:`live_leased`). A lease is live while renewed within its time-to-live and
  its process is not known to be dead (same machine: :func:`osutil.processes.is_dead`).
- **Rows commit only over present blobs.** A row that names blobs is written in a transaction
  that holds the same lock (shared) and first checks every blob it names is in the store
  (:func:`require_stored`), so even a lease lost to a stalled process (or a gc that ignored it)
  fails the command with one line instead of recording a row over missing blobs.

The lock is the write transaction itself on SQLite (``BEGIN IMMEDIATE`` excludes every other
writer) and a transaction-scoped advisory lock on PostgreSQL (shared for claims and rows,
exclusive for gc's deletes). Times are the database's clock, so machines need not agree on time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from osutil.processes import is_dead, process_key
from registry.store.blobstore import BlobStore
from registry.store.database import Database
from registry.store.errors import NotFound
from registry.store.manifests import load_manifest, manifest_files
from registry.store.schema import BLOB_COLUMNS, BlobLeaseItemRow, BlobLeaseRow, UTCDateTime

log = logging.getLogger(__name__)
LEASE_TTL_SECONDS = 600  # a lease not renewed for this long is expired (its process stalled or died elsewhere)
RENEW_SECONDS = 60.0
_PG_GC_LOCK_KEY = 0x6D656D67  # "memg"


def gc_lock(session: Session, *, exclusive: bool) -> None:
    """Take the gc lock for the rest of ``session``'s write transaction (see the module's docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {fn}(:k)"), {"k": _PG_GC_LOCK_KEY})


class BlobLeases:
    """This process's lease on the blobs it stores through one database."""

    def __init__(self, db: Database, *, ttl_seconds: int = LEASE_TTL_SECONDS, renew_seconds: float = RENEW_SECONDS):
        self.db = db
        self.id = uuid.uuid4().hex
        self.ttl_seconds = ttl_seconds
        self.renew_seconds = renew_seconds
        self._claimed: set[str] = set()
        self._created = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, sha256: str) -> None:
        """Record ``sha256`` under this process's lease (committed before it returns)."""
        with self._lock:
            if sha256 in self._claimed and self._created:
                return
            with self.db.write() as session:
                gc_lock(session, exclusive=False)
                if not self._created:
                    self._create(session, [])
                session.add(BlobLeaseItemRow(lease_id=self.id, sha256=sha256))
            self._created = True  # committed
            self._claimed.add(sha256)
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_loop, name="memo-blob-lease", daemon=True)
                self._thread.start()

    def _create(self, session: Session, items: Iterable[str]) -> None:
        session.add(BlobLeaseRow(id=self.id, holder=process_key(), ttl_seconds=self.ttl_seconds, renewed_at=func.now()))
        session.flush()  # the lease before its items (no ORM relationship orders them)
        session.add_all(BlobLeaseItemRow(lease_id=self.id, sha256=sha) for sha in items)

    def renew(self) -> None:
        """Push the lease's expiry on; a lease that gc took as expired (the process stalled) is made again."""
        with self._lock:
            if not self._created:
                return
            with self.db.write() as session:
                gc_lock(session, exclusive=False)
                renewed = session.execute(
                    update(BlobLeaseRow).where(BlobLeaseRow.id == self.id).values(renewed_at=func.now())
                )
                if renewed.rowcount == 0:  # type: ignore[attr-defined]
                    self._create(session, sorted(self._claimed))  # committed with the transaction

    def _renew_loop(self) -> None:
        warned = False
        while not self._stop.wait(self.renew_seconds):
            try:
                self.renew()
            except Exception as e:  # the database is away for now: the next round tries again
                if not warned:
                    log.warning("cannot renew the blob lease (%s); trying again", str(e).splitlines()[0][:200])
                    warned = True

    def release(self) -> None:
        """Drop the lease (its blobs are then either referenced by rows or collectable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread, self._stop = None, threading.Event()  # a later claim starts renewing again
        with self._lock:
            if not self._created:
                return
            try:
                with self.db.write() as session:
                    session.execute(delete(BlobLeaseItemRow).where(BlobLeaseItemRow.lease_id == self.id))
                    session.execute(delete(BlobLeaseRow).where(BlobLeaseRow.id == self.id))
            except Exception:  # noqa: S110 - unreachable database: the lease expires by itself
                pass
            self._created = False
            self._claimed.clear()


def _expired(session: Session) -> list[str]:
    """Leases whose time-to-live has passed, or whose process is known to be dead."""
    now = session.execute(select(func.now(type_=UTCDateTime()))).scalar_one()  # aware, as renewed_at is read
    rows = session.execute(
        select(BlobLeaseRow.id, BlobLeaseRow.holder, BlobLeaseRow.renewed_at, BlobLeaseRow.ttl_seconds)
    )
    return [lease for lease, holder, renewed, ttl in rows if renewed + timedelta(seconds=ttl) <= now or is_dead(holder)]


def live_leased(session: Session, shas: Iterable[str] | None = None, *, own: str | None = None) -> set[str]:
    """Which of ``shas`` (None: of every blob) are under a live lease other than this process's ``own``."""
    query = select(BlobLeaseItemRow.sha256, BlobLeaseItemRow.lease_id)
    if shas is not None:
        wanted = list(shas)
        if not wanted:
            return set()
        query = query.where(BlobLeaseItemRow.sha256.in_(wanted))
    expired = set(_expired(session))
    return {sha for sha, lease in session.execute(query) if lease != own and lease not in expired}


def drop_expired(session: Session) -> int:
    """Delete the expired leases (and their items); returns how many."""
    expired = _expired(session)
    if expired:
        session.execute(delete(BlobLeaseItemRow).where(BlobLeaseItemRow.lease_id.in_(expired)))
        session.execute(delete(BlobLeaseRow).where(BlobLeaseRow.id.in_(expired)))
    return len(expired)


def referenced_directly(session: Session, shas: Iterable[str]) -> set[str]:
    """Which of ``shas`` a row names in one of its blob columns (at this moment, in this transaction)."""
    wanted = list(shas)
    found: set[str] = set()
    for _model, column in BLOB_COLUMNS:
        found.update(session.scalars(select(column).where(column.in_(wanted))))
    return found


def require_stored(
    session: Session, store: BlobStore, *, blobs: Iterable[str] = (), manifests: Iterable[str] = (), what: str
) -> None:
    """Inside the write transaction that records ``what``: every blob it names (``blobs``, and each
    manifest with every file it lists) is in the store, else :class:`NotFound` and nothing is recorded."""
    gc_lock(session, exclusive=False)
    manifests = list(manifests)
    _require(store, [*blobs, *manifests], what)
    for manifest in manifests:
        _require(store, manifest_files(load_manifest(store, manifest)).values(), what)


def _require(store: BlobStore, shas: Iterable[str], what: str) -> None:
    for sha in dict.fromkeys(shas):
        if not store.exists(sha):
            raise NotFound(
                f"blob {sha} of {what} left the store before it was recorded (a `memo gc` that did not see "
                "this command?); nothing was recorded: run the command again"
            )
