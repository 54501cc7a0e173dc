"""Engines and transactions.

SQLite gets WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for
every write transaction: a deferred transaction that later wants to write can
fail with SQLITE_BUSY instead of waiting, which loses races between processes.
Reads use plain deferred transactions, so readers never block each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from registry.store.errors import Corrupt, InvalidInput

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 60_000
_WRITE_OPTION = "memo_write"


def row_of(session: Session, model: type[T], ident: Any) -> T:
    """The row a foreign key points at: its absence means a damaged database, not bad input."""
    row = session.get(model, ident)
    if row is None:
        table = getattr(model, "__tablename__", model.__name__)
        raise Corrupt(f"the registry refers to {table} {ident}, which is missing; the database is damaged")
    return row


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # We issue BEGIN ourselves (below); the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a URL SQLAlchemy cannot read, or whose driver is not installed, is one line."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(engine)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as e:
        extra = " (pip install 'memo-registry[postgres]')" if url.startswith("postgres") else ""
        raise InvalidInput(f"the database driver {e.name!r} is not installed{extra}") from None
    except (ArgumentError, NoSuchModuleError) as e:
        raise InvalidInput(f"{_safe(url)!r} is not a database URL memo can use ({str(e).splitlines()[0]})") from None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL"


class Database:
    """Hands out sessions whose transaction commits on success and rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        self._read = sessionmaker(bind=engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
