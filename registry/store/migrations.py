"""Run Alembic migrations, under a lock, and refuse newer schemas.

A home's own SQLite file upgrades itself at start-up; a database given by URL
(shared by a team) is upgraded only by `memo db upgrade`, as MLflow's
``mlflow db upgrade`` does, and an older schema there is a one-line error
naming that command.

Two processes starting at once must not both migrate: on PostgreSQL a
transaction-scoped advisory lock serialises them, elsewhere a file lock next
to the home does. The already-at-head check runs first without any lock, so
normal start-up costs one small query.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from filelock import FileLock
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from alembic import command
from registry.store.database import Database
from registry.store.errors import SchemaMismatch
from registry.store.version import memo_version

_PG_LOCK_KEY = 0x6D656D6F  # "memo"


def migrations_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # registry/
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("memo's Alembic migrations are missing from the installation")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaMismatch("memo's migrations are missing from this installation; reinstall memo")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _newer_memo(conn: Connection) -> str:
    """Which memo migrated the database, as the newer schema records it (``schema_info``)."""
    try:
        found = conn.execute(text("SELECT value FROM schema_info WHERE key = 'memo_version'")).scalar()
    except DBAPIError:
        conn.rollback()
        found = None
    return f"memo {found} or newer (pip install 'memo-registry>={found}')" if found else "a newer memo"


def _check_known(conn: Connection, revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(revision)
    except CommandError:
        raise SchemaMismatch(
            f"the database is at schema revision {revision!r}, which memo {memo_version()} does not know "
            f"(newest: {script.get_current_head()!r}): it was migrated by {_newer_memo(conn)}; install that"
        ) from None


def _upgrade(conn: Connection) -> None:
    current = current_revision(conn)
    _check_known(conn, current)
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    try:
        command.upgrade(cfg, "head")
        conn.execute(text("DELETE FROM schema_info WHERE key = 'memo_version'"))
        conn.execute(text("INSERT INTO schema_info (key, value) VALUES ('memo_version', :v)"), {"v": memo_version()})
    except DBAPIError as e:  # a read-only file or role, a full disk: the schema stays as it was
        reason = str(e.orig or e).strip().splitlines()[0][:200]
        raise SchemaMismatch(
            f"the database is at schema revision {current!r} and memo {memo_version()} needs {head_revision()!r}, "
            f"but it could not be upgraded ({reason}); open it with write access once, or use the memo that wrote it"
        ) from None


def revisions(db: Database) -> tuple[str | None, str]:
    """(the database's schema revision, this memo's)."""
    with db.engine.connect() as conn:
        current = current_revision(conn)
        conn.rollback()
    return current, head_revision()


def migrate(db: Database, lock_dir: Path, *, implicit: bool = True) -> tuple[str | None, str]:
    """Bring the schema to head (a no-op when it already is); returns (from, to).

    An empty database is always given the schema. One at an older revision is upgraded only when
    ``implicit`` (a home's own SQLite file) or when asked (`memo db upgrade`): a shared database is
    never migrated by whoever happens to upgrade memo first, which would lock the others out."""
    current, head = revisions(db)
    if current == head:
        return current, head
    with db.engine.connect() as conn:
        _check_known(conn, current)
    if current is not None and not implicit:
        raise SchemaMismatch(
            f"the database is at schema revision {current!r} and memo {memo_version()} needs {head!r}; run "
            "`memo db upgrade` (everyone who uses this database then needs this memo or newer)"
        )
    if db.dialect == "postgresql":
        with db.write_engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _upgrade(conn)
    else:
        with FileLock(str(lock_dir / "migrate.lock"), timeout=300), db.write_engine.begin() as conn:
            _upgrade(conn)
    return current, head
