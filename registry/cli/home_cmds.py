"""`memo init`, `memo log`, `memo verify`, `memo gc`."""

from __future__ import annotations

import click
from rich.progress import Progress

from registry import DEFAULT_GC_GRACE_SECONDS
from registry.cli.app import AppContext, pass_app
from registry.cli.merge_cmds import lowest_retention
from registry.cli.output import err_console, human_size, json_option, print_json, print_log


@click.command()
@json_option
@pass_app
def init(app: AppContext, as_json: bool) -> None:
    """Create a memo home (safe to run again) and give an empty database the schema.

    \b
    Examples:
      memo --home ./registry init
      memo init --db postgresql+psycopg://memo@db/memo --blobs s3://team-bucket/memo   # a team registry
    """
    from registry import Registry  # SQL and the operations: loaded when the command runs

    with Registry.init(app.home, database_url=app.database_url, blobs=app.blobs_url) as reg:
        info = {
            "home": str(reg.home),
            "database": reg.db.engine.url.render_as_string(hide_password=True),
            "blobs": reg.store.url,
        }
    if as_json:
        print_json(info)
    else:
        click.echo(f"memo home ready at {info['home']} (database: {info['database']}; blobs: {info['blobs']})")


@click.command()
@click.argument("channel", required=False)
@json_option
@pass_app
def log(app: AppContext, channel: str | None, as_json: bool) -> None:
    """Show the history of CHANNEL (or of every channel): promotions and rollbacks.

    \b
    Example:
      memo log production
    """
    events = app.registry().log(channel)
    if as_json:
        print_json([e.to_json() for e in events])
        return
    retention = {m.id: lowest_retention(m) for m in app.registry().list_merges()}
    print_log(events, f"history of {channel}" if channel else "channel history", retention)


@click.command()
@json_option
@pass_app
def verify(app: AppContext, as_json: bool) -> None:
    """Rehash every blob and cache entry; report what is missing or corrupt (exit 1 if any).

    \b
    Example:
      memo verify --json
    """
    reg = app.registry()
    total = sum(1 for _ in reg.store.iter_blobs())
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task("verifying blobs", total=total)
        report = reg.verify(progress=lambda _sha: progress.advance(task))
    if as_json:
        print_json(report.to_json())
    else:
        for p in report.problems:
            click.echo(f"{p.problem}: {p.sha256} ({p.referenced_by})")
        for c in report.cache_problems:
            click.echo(f"damaged cache entry: {c.entry}: {c.problem} (removed: rebuilt from the blobs at its next use)")
        click.echo(
            f"{report.checked} blobs checked, {len(report.problems)} problems, "
            f"{len(report.unreferenced)} unreferenced (see `memo gc`), "
            f"{report.temp_files} leftover temp files; "
            f"{report.cache_checked} cache entries checked, {len(report.cache_problems)} damaged"
        )
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command()
@click.option("--yes", "delete", is_flag=True, help="Really delete (default: dry run, list only).")
@click.option(
    "--grace",
    type=float,
    default=DEFAULT_GC_GRACE_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="Keep what is younger than this (a running command may still need it).",
)
@click.option(
    "--cache",
    "caches",
    is_flag=True,
    help="Also remove the model caches under HOME/cache (rebuilt from the blobs when next needed).",
)
@json_option
@pass_app
def gc(app: AppContext, delete: bool, grace: float, caches: bool, as_json: bool) -> None:
    """Remove blobs that no registry row reaches, the work directories that
    interrupted commands left in HOME/tmp, and the partial outputs of killed
    merges and exports under the home (a live command's are never touched).
    A dry run unless --yes.

    \b
    Example:
      memo gc                 # what would go
      memo gc --yes           # delete it
      memo gc --yes --cache   # and the rebuildable model caches
    """
    report = app.registry().gc(dry_run=not delete, grace_seconds=grace, caches=caches)
    if as_json:
        print_json(report.to_json())
        return
    verb = "would remove" if report.dry_run else "removed"
    click.echo(
        f"{verb} {len(report.removed)} blobs, {report.temp_files_removed} temp files, "
        f"{report.work_dirs_removed} work directories"
        + (f", {report.cache_entries_removed} cache entries" if caches else "")
        + f" ({human_size(report.bytes_freed)}); kept {report.kept_recent} recent unreferenced blobs"
        + f" and {report.kept_leased} that running commands are storing"
    )
    if report.dry_run and (report.removed or report.work_dirs_removed or report.cache_entries_removed):
        click.echo("run `memo gc --yes` to delete them")
