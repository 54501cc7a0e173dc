"""What every operation works in: the database, the blob store, and the places of the home."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from registry.store.blobstore import BlobStore
from registry.store.cache_limit import CacheTooSmall, CacheUse
from registry.store.cache_records import entry_problem, read_record, write_record
from registry.store.database import Database
from registry.store.home import CacheKind, cache_dir, checkpoints_dir, work_root
from registry.store.leases import BlobLeases
from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import build_entry, keep_entry, set_aside

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    """The registry's database and blob store, and the home whose caches and work directories
    the operations use (:mod:`registry.store.home` names each place)."""

    db: Database
    store: BlobStore
    home: Path
    cache_use: CacheUse = field(default_factory=CacheUse)  # what this process holds in the cache
    leases: BlobLeases | None = None  # what this process is storing (wired to the store's claim hook)

    def __post_init__(self) -> None:
        if self.leases is not None:
            self.store.claim = self.leases.claim

    def cache(self, kind: CacheKind) -> Path:
        return cache_dir(self.home, kind)

    def work_root(self) -> Path:
        """Where commands build their work (created on first use)."""
        return work_root(self.home)

    @property
    def checkpoints(self) -> Path:
        return checkpoints_dir(self.home)

    def materialize(self, manifest_sha256: str, kind: CacheKind, *, what: str, full: bool = False) -> Path:
        """A stored artifact as a verified directory in the ``kind`` cache (:mod:`registry.store.materialize`),
        held for this process; the cache is then trimmed to its limit (:mod:`registry.store.cache_limit`).
        An entry already there is checked first (``full``: rehashed, for a command that publishes it or
        records what it makes from it; :mod:`registry.store.cache_records`), and rebuilt if damaged."""
        for _ in range(3):  # another process may evict it between the build and the hold: build again
            entry, built = build_entry(self.store, manifest_sha256, self.cache(kind), what=what)
            if not self.cache_use.hold(entry):
                continue
            if built:
                self.cache_use.verified.add(entry)  # hashed as it was copied from the store
                self.cache_use.trim(self.home / "cache")
                return entry
            if self.checked(entry, what=what, full=full, manifest_sha256=manifest_sha256):
                return entry
        raise CacheTooSmall(
            f"{what} is evicted from the cache as soon as it is built: other memo processes need more than "
            "the cache size; raise --cache-size (MEMO_CACHE_SIZE)"
        )

    def keep(self, directory: Path, manifest_sha256: str, kind: CacheKind, *, move: bool) -> None:
        """Keep a directory just stored as ``manifest_sha256`` as its cache entry (write-through), so this
        machine does not fetch back what it has just stored (:func:`registry.store.materialize.keep_entry`).

        A command's own output (``move``) is always kept: it is used next (evaluated, served), and renaming
        it costs nothing. A user's directory is copied only when the store is elsewhere (a bucket): from a
        local store the blobs are read where they lie."""
        if not move and self.store.local_path(manifest_sha256) is not None:
            return
        files = manifest_files(load_manifest(self.store, manifest_sha256))
        keep_entry(directory, manifest_sha256, files, self.cache(kind), move=move)
        self.cache_use.trim(self.home / "cache")  # not held: kept if it fits, like any entry not in use

    def cached(self, manifest_sha256: str, kind: CacheKind, *, what: str, full: bool = False) -> Path | None:
        """The artifact's cache entry when it is there and sound (now held for this process), else None."""
        entry = self.cache(kind) / manifest_sha256
        if not (entry.is_dir() and self.cache_use.hold(entry)):
            return None
        return entry if self.checked(entry, what=what, full=full, manifest_sha256=manifest_sha256) else None

    def checked(self, entry: Path, *, what: str, full: bool, manifest_sha256: str | None = None) -> bool:
        """Whether a held cache entry passes its check; one that fails is let go and set aside (to be
        built again), with a warning. An entry with no record (made by an older memo) is checked in full
        against its manifest, and recorded."""
        full = full and entry not in self.cache_use.verified
        problem = entry_problem(entry, full=full)
        if problem is not None and read_record(entry) is None and manifest_sha256 is not None:
            manifest = load_manifest(self.store, manifest_sha256)["files"]
            write_record(entry, {rel: (f["sha256"], f["size"]) for rel, f in manifest.items()})
            problem, full = entry_problem(entry, full=True), True
        if problem is None:
            if full:
                self.cache_use.verified.add(entry)
            return True
        log.warning("the cached copy of %s %s; it is set aside and built again from the blob store", what, problem)
        self.cache_use.forget(entry)
        set_aside(entry)
        return False

    def hold_cached(self, entry: Path) -> bool:
        """Hold a cache entry built by other means (an applied task vector), then trim the cache;
        False when it was evicted before it could be held."""
        if not self.cache_use.hold(entry):
            return False
        self.cache_use.trim(self.home / "cache")
        return True
