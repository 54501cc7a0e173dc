"""`memo db status` and `memo db upgrade`: the database's schema, migrated only when asked."""

from __future__ import annotations

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import json_option, print_json


@click.group()
def db() -> None:
    """The registry database's schema.

    A home's own SQLite file upgrades itself; a database given by URL (a
    team's PostgreSQL) is upgraded only by `memo db upgrade`, so one
    teammate's new memo never locks the others out.
    """


@db.command("status")
@json_option
@pass_app
def db_status(app: AppContext, as_json: bool) -> None:
    """The database's schema revision and this memo's.

    \b
    Example:
      memo --db postgresql+psycopg://memo@db/memo db status
    """
    from registry import database_revisions  # SQL and Alembic: loaded when the command runs

    current, head = database_revisions(app.home, database_url=app.database_url)
    if as_json:
        print_json({"database": current, "memo": head, "up_to_date": current == head})
        return
    state = "up to date" if current == head else "run `memo db upgrade`"
    click.echo(f"database at schema revision {current or 'none'}; this memo's is {head} ({state})")


@db.command("upgrade")
@json_option
@pass_app
def db_upgrade(app: AppContext, as_json: bool) -> None:
    """Migrate the database to this memo's schema (everyone who uses it then needs this memo or newer).

    \b
    Example:
      memo --db postgresql+psycopg://memo@db/memo db upgrade
    """
    from registry import upgrade_database  # SQL and Alembic: loaded when the command runs

    before, after = upgrade_database(app.home, database_url=app.database_url)
    if as_json:
        print_json({"from": before, "to": after})
    elif before == after:
        click.echo(f"database already at schema revision {after}")
    else:
        click.echo(f"database upgraded from schema revision {before or 'none'} to {after}")
