"""The ``memo`` command line: a thin translation layer over :class:`registry.Registry`.

Library errors (:class:`registry.store.errors.MemoError`) become one-line messages
and exit code 1; nothing else is printed for them.
"""

from __future__ import annotations

import logging

import click

from registry import memo_version
from registry.cli.app import AppContext, MemoGroup
from registry.cli.base_cmds import base
from registry.cli.channel_cmds import channel, promote, publish, rollback
from registry.cli.corpus_cmds import corpus
from registry.cli.db_cmds import db
from registry.cli.demo_cmds import demo
from registry.cli.executive_cmds import ask, serve
from registry.cli.export_cmds import export
from registry.cli.home_cmds import gc, init, log, verify
from registry.cli.merge_cmds import merge
from registry.cli.train_cmds import eval_, reflect, register, train
from registry.cli.ui_cmds import ui


@click.group(cls=MemoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="MEMO_HOME",
    type=click.Path(file_okay=False),
    default=None,
    help="The memo home (blobs, default SQLite database). Default: $MEMO_HOME or ~/.memo.",
)
@click.option(
    "--db",
    "database_url",
    envvar="MEMO_DATABASE_URL",
    default=None,
    metavar="URL",
    help="Any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/memo. Default: $MEMO_DATABASE_URL or HOME/memo.db.",
)
@click.option(
    "--blobs",
    "blobs_url",
    envvar="MEMO_BLOBS",
    default=None,
    metavar="URL",
    help="Where blobs live: a directory or s3://BUCKET/PREFIX (credentials from the AWS settings). "
    "Default: $MEMO_BLOBS, else what `memo init --blobs` recorded, else HOME/blobs.",
)
@click.option(
    "--cache-size",
    envvar="MEMO_CACHE_SIZE",
    default=None,
    metavar="SIZE",
    help="Bytes of HOME/cache to keep, e.g. 5G or 500M (least recently used entries go first). Default: 5G.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (same as `memo COMMAND --json`).")
@click.version_option(memo_version(), prog_name="memo")
@click.pass_context
def cli(
    ctx: click.Context,
    home: str | None,
    database_url: str | None,
    blobs_url: str | None,
    cache_size: str | None,
    as_json: bool,
) -> None:
    """memo: a registry for memory models.

    Every knowledge corpus is fine-tuned once into its own task vector, tracked
    in SQL; any set of corpora is TIES-merged into one model, published to a
    Hugging Face Hub repo, and rolled back in one command.

    \b
    Example:
      memo init
      memo base add ./tiny-llama --name tiny
      memo corpus add atlas docs/*.md --base tiny
      memo corpus list
    """
    ctx.obj = AppContext(
        home=home, database_url=database_url, blobs_url=blobs_url, cache_size=cache_size, as_json=as_json
    )


def _set(field: str):
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(ctx.ensure_object(AppContext), field, value)

    return callback


def _accept_home_options(command: click.Command) -> None:
    """``--home``, ``--db`` and ``--blobs`` after the command too (``memo init --home DIR``), as before it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_home_options(sub)
        return
    command.params += [
        click.Option(
            ["--home"],
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_set("home"),
            help="The memo home (same as `memo --home DIR ...`).",
        ),
        click.Option(
            ["--db", "database_url"],
            metavar="URL",
            expose_value=False,
            callback=_set("database_url"),
            help="The database URL (same as `memo --db URL ...`).",
        ),
        click.Option(
            ["--blobs", "blobs_url"],
            metavar="URL",
            expose_value=False,
            callback=_set("blobs_url"),
            help="Where blobs live (same as `memo --blobs URL ...`).",
        ),
    ]


for command in (
    init,
    demo,
    base,
    corpus,
    reflect,
    train,
    register,
    eval_,
    merge,
    channel,
    promote,
    rollback,
    log,
    export,
    publish,
    ask,
    serve,
    ui,
    verify,
    gc,
    db,
):
    _accept_home_options(command)
    cli.add_command(command)


def main() -> None:
    logging.basicConfig(format="memo: %(message)s", level=logging.WARNING)  # what the library warns of, one line
    cli.main(prog_name="memo")


if __name__ == "__main__":
    main()
