"""What every operation works in: the database, the blob store, and the places of the home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database
from registry.store.home import CacheKind, cache_dir, checkpoints_dir, work_root
from registry.store.materialize import materialize


@dataclass(frozen=True)
class Workspace:
    """The registry's database and blob store, and the home whose caches and work directories
    the operations use (:mod:`registry.store.home` names each place)."""

    db: Database
    store: LocalBlobStore
    home: Path

    def cache(self, kind: CacheKind) -> Path:
        return cache_dir(self.home, kind)

    def work_root(self) -> Path:
        """Where commands build their work (created on first use)."""
        return work_root(self.home)

    @property
    def checkpoints(self) -> Path:
        return checkpoints_dir(self.home)

    def materialize(self, manifest_sha256: str, kind: CacheKind, *, what: str) -> Path:
        """A stored artifact as a verified directory in the ``kind`` cache (:mod:`registry.store.materialize`)."""
        return materialize(self.store, manifest_sha256, self.cache(kind), what=what)
