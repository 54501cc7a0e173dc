"""Shared CLI pieces: option decorators, JSON and table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from executive.http_guard import bind_warning

# Wide enough that a table is never cut or wrapped when output goes to a log file or a pipe
# (rich falls back to 80 columns there); on a terminal rich uses the terminal's width.
_UNBOUNDED = 1_000


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else _UNBOUNDED)


# Human-facing messages and progress go to stderr; stdout carries the results.
err_console = console(stderr=True)


def json_option(f: Callable) -> Callable:
    """``--json`` on a command; ``memo --json COMMAND`` asks for it as well."""
    return click.option(
        "--json", "as_json", is_flag=True, callback=_json_wanted, help="Print JSON for scripts instead of a table."
    )(f)


def _json_wanted(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    return value or bool(getattr(ctx.find_root().obj, "as_json", False))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console().print(table)


def when(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else ""


@contextmanager
def progress_bar(desc: str, hidden: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr driven by ``update(done, total)`` callbacks."""
    with tqdm(desc=desc, disable=hidden, file=sys.stderr) as bar:

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield update


def print_log(events, title: str, retention: dict[int, str] | None = None) -> None:
    """Channel events as a table (`memo log`, `memo demo`); ``retention``: merge id -> its lowest retention."""
    retention = retention or {}
    print_table(
        title,
        ["time", "channel", "action", "from", "to", "retention", "forced", "reason"],
        [
            (
                when(e.created_at),
                e.channel,
                e.action,
                e.from_merge_id,
                e.to_merge_id,
                retention.get(e.to_merge_id, ""),
                "yes" if e.forced else "",
                e.reason,
            )
            for e in events
        ],
    )


def allow_host_option(f: Callable) -> Callable:
    """``--allow-host NAME`` (repeatable) on the commands that serve HTTP."""
    return click.option(
        "--allow-host",
        "allow_hosts",
        multiple=True,
        metavar="NAME",
        help="Also answer requests for this Host name (e.g. this machine's name on the network); only "
        "loopback names and the bound address are answered otherwise. '*' answers any (DNS rebinding: not advised).",
    )(f)


def warn_if_exposed(host: str, what: str) -> None:
    """One warning line on stderr when a server is bound where other machines reach it."""
    warning = bind_warning(host, what)
    if warning:
        click.echo(f"warning: {warning}", err=True)
