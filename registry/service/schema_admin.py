"""`memo db status` and `memo db upgrade`: the database's schema, looked at and migrated without
opening a registry (which refuses a shared database whose schema is behind)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from registry.store.config import resolve_settings
from registry.store.database import Database, make_engine
from registry.store.home import check_home
from registry.store.migrations import migrate, revisions

T = TypeVar("T")


def _with_database(home, database_url: str | None, use: Callable[[Database, Path], T]) -> T:
    settings = resolve_settings(home, database_url)
    check_home(settings.home)
    db = Database(make_engine(settings.database_url))
    try:
        return use(db, settings.home)
    finally:
        db.dispose()


def upgrade_database(
    home: str | os.PathLike[str] | None = None, *, database_url: str | None = None
) -> tuple[str | None, str]:
    """Migrate the home's database (a shared one too) to this memo's schema; (revision before, after)."""
    return _with_database(home, database_url, lambda db, where: migrate(db, lock_dir=where, implicit=True))


def database_revisions(
    home: str | os.PathLike[str] | None = None, *, database_url: str | None = None
) -> tuple[str | None, str]:
    """(the database's schema revision, this memo's), migrating nothing."""
    return _with_database(home, database_url, lambda db, _where: revisions(db))
