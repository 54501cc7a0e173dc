"""Alembic environment for memo.

memo runs migrations itself at start-up (``registry.store.migrations``) and hands
the open connection in ``config.attributes["connection"]``; the plain
``alembic`` command line works too, with ``-x url=...`` or ``MEMO_DATABASE_URL``.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool

from alembic import context

config = context.config


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        # SQLite cannot ALTER most things in place: batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("MEMO_DATABASE_URL")
    if not url:
        raise SystemExit("give the database with -x url=... or MEMO_DATABASE_URL")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)


run()
