"""Where the registry lives: the home directory and the database URL.

Resolution order for each: explicit argument (CLI flag), environment
(``MEMO_HOME``, ``MEMO_DATABASE_URL``), default (``~/.memo`` and a SQLite file
inside the home).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry.store.cache_limit import DEFAULT_CACHE_SIZE, cache_limit, parse_size
from registry.store.home import recorded_blobs

HOME_ENV = "MEMO_HOME"
DATABASE_URL_ENV = "MEMO_DATABASE_URL"
BLOBS_ENV = "MEMO_BLOBS"
DEFAULT_HOME = Path("~/.memo")
DATABASE_FILE = "memo.db"
DEFAULT_GC_GRACE_SECONDS = 3600.0  # `memo gc` keeps unreferenced blobs younger than this (besides leased ones)


@dataclass(frozen=True)
class Settings:
    home: Path  # the home marker, caches, work directories and (by default) the blobs and SQLite database
    database_url: str  # any SQLAlchemy URL
    blobs_url: str | None = None  # a directory or s3://bucket/prefix (None: HOME/blobs)
    cache_size: int = DEFAULT_CACHE_SIZE  # bytes of HOME/cache kept (least recently used go first)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def resolve_settings(
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    blobs_url: str | None = None,
    cache_size: str | None = None,
) -> Settings:
    """Each setting from its argument, else its environment variable, else its default (the blob
    store's default is what the home recorded at ``memo init --blobs``, else ``HOME/blobs``)."""
    home_path = Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    url = database_url or os.environ.get(DATABASE_URL_ENV) or sqlite_url(home_path / DATABASE_FILE)
    blobs = blobs_url or os.environ.get(BLOBS_ENV) or recorded_blobs(home_path)
    size = parse_size(cache_size) if cache_size else cache_limit()
    return Settings(home=home_path, database_url=url, blobs_url=blobs, cache_size=size)


def owns_database(settings: Settings) -> bool:
    """Whether the database is the home's own SQLite file (it may upgrade itself; a shared one may not)."""
    return settings.database_url == sqlite_url(settings.home / DATABASE_FILE)
