"""The part of :class:`registry.Registry` that looks after the store: `memo verify` and `memo gc`."""

from __future__ import annotations

from collections.abc import Callable

from registry.operations import maintenance
from registry.store.config import DEFAULT_GC_GRACE_SECONDS
from registry.store.records import GcReport, VerifyReport
from registry.store.workspace import Workspace


class MaintenanceFacade:
    ws: Workspace

    def verify(self, *, progress: Callable[[str], None] | None = None) -> VerifyReport:
        """Rehash every blob and every cache entry (damaged cache copies are removed)."""
        return maintenance.verify(self.ws, progress=progress)

    def gc(
        self, *, dry_run: bool = True, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS, caches: bool = False
    ) -> GcReport:
        """Remove what no row reaches and no running command has claimed (a dry run by default)."""
        return maintenance.gc(self.ws, dry_run=dry_run, grace_seconds=grace_seconds, caches=caches)
