"""The CLI's context (the lazily opened registry) and error translation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from registry import MemoError

if TYPE_CHECKING:
    from registry import Registry


@dataclass
class AppContext:
    home: str | None
    database_url: str | None
    blobs_url: str | None = None
    cache_size: str | None = None
    as_json: bool = False  # `memo --json COMMAND`: every command that can print JSON does
    _registry: Registry | None = field(default=None, repr=False)

    def registry(self) -> Registry:
        if self._registry is None:
            from registry import Registry  # SQL and the operations: loaded by the commands that open one

            self._registry = Registry.open(
                self.home, database_url=self.database_url, blobs=self.blobs_url, cache_size=self.cache_size
            )
            click.get_current_context().call_on_close(self._registry.close)
        return self._registry


def _one_line(e: click.UsageError) -> click.ClickException:
    """A usage error as the rest are reported: one line, exit code 1 (click's own is 4 lines, exit 2)."""
    ctx = e.ctx
    if ctx is not None and ctx.command.hidden and ctx.parent is not None:  # a group's default subcommand
        ctx = ctx.parent
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return click.ClickException(" ".join(e.format_message().split()) + hint)


class MemoGroup(click.Group):
    """Turns library errors and usage errors into one-line messages with exit code 1."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # the top-level options (--home, --db, an unknown command)
            raise _one_line(e) from e

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a sub-command's arguments and options
            raise _one_line(e) from e
        except MemoError as e:
            raise click.ClickException(str(e).replace("\n", " ")) from e
        except OSError as e:  # disk full, permissions, ...: every write is atomic, so nothing half-done remains
            where = f" ({e.filename})" if e.filename else ""
            raise click.ClickException(f"{e.strerror or e}{where}; the command was not completed") from e
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was changed by the unfinished step", err=True)
            ctx.exit(130)


pass_app = click.make_pass_decorator(AppContext)
