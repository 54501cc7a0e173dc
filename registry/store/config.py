"""Where the registry lives: the home directory and the database URL.

Resolution order for each: explicit argument (CLI flag), environment
(``MEMO_HOME``, ``MEMO_DATABASE_URL``), default (``~/.memo`` and a SQLite file
inside the home).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "MEMO_HOME"
DATABASE_URL_ENV = "MEMO_DATABASE_URL"
DEFAULT_HOME = Path("~/.memo")
DATABASE_FILE = "memo.db"


@dataclass(frozen=True)
class Settings:
    home: Path  # blobs, the home marker, and (by default) the SQLite database
    database_url: str  # any SQLAlchemy URL


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def resolve_settings(home: str | os.PathLike[str] | None = None, database_url: str | None = None) -> Settings:
    home_path = Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    url = database_url or os.environ.get(DATABASE_URL_ENV) or sqlite_url(home_path / DATABASE_FILE)
    return Settings(home=home_path, database_url=url)
