"""`memo channel`, `promote`, `rollback`, `export` and `publish`: where merges go."""

from __future__ import annotations

import os

import click

from registry import ChannelEventRecord
from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, json_option, print_json, print_table
from registry.cli.webhook_cmds import channel_deliveries, channel_webhooks, report_deliveries
from registry.figures import gates


def _moved(event: ChannelEventRecord | None, channel: str) -> str:
    if event is None:
        return f"channel {channel} already points there"
    before = f"merge-{event.from_merge_id}" if event.from_merge_id else "no merge"
    return f"channel {channel}: {before} -> merge-{event.to_merge_id} ({event.action})"


@click.group()
def channel() -> None:
    """Channels: named pointers to merges (e.g. production)."""


@channel.command("list")
@json_option
@pass_app
def channel_list(app: AppContext, as_json: bool) -> None:
    """List the channels, their current merge and linked Hub repo.

    \b
    Example:
      memo channel list
    """
    rows = app.registry().list_channels()
    if as_json:
        print_json([c.to_json() for c in rows])
    else:
        print_table(
            "channels",
            ["channel", "merge", "hub repo", "endpoint", "min retention", "min general"],
            [
                (
                    c.name,
                    c.current_merge_id and f"merge-{c.current_merge_id}",
                    c.hub_repo,
                    c.hub_endpoint,
                    "" if c.min_retention is None else f"{c.min_retention:g}",
                    "" if c.min_general is None else f"{c.min_general:g}",
                )
                for c in rows
            ],
        )


@channel.command("set")
@click.argument("name")
@click.option("--repo", metavar="ORG/NAME", help="Link to this Hub repo: promote and rollback then publish.")
@click.option("--endpoint", metavar="URL", help="The Hub's URL [default: $HF_ENDPOINT or huggingface.co].")
@click.option("--unlink", is_flag=True, help="Stop publishing this channel.")
@click.option(
    "--min-retention",
    type=float,
    metavar="FRACTION",
    help="Refuse promotions of merges that keep less than this of any member corpus (e.g. 0.8).",
)
@click.option(
    "--min-general",
    type=float,
    metavar="FRACTION",
    help="Refuse promotions of merges that keep less than this of the base's general knowledge (e.g. 0.85).",
)
@click.option("--no-gate", is_flag=True, help="Remove both gates.")
@click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    metavar="URL",
    help="POST every promotion, rollback and gate refusal to URL as JSON (repeatable).",
)
@click.option(
    "--webhook-secret-env",
    metavar="VAR",
    help="Sign --webhook's messages (HMAC-SHA256) with the secret in environment variable VAR (the name is stored).",
)
@click.option("--no-webhook", "unhooks", multiple=True, metavar="URL", help="Stop telling URL (repeatable).")
@json_option
@pass_app
def channel_set(
    app: AppContext,
    name: str,
    repo: str | None,
    endpoint: str | None,
    unlink: bool,
    min_retention: float | None,
    min_general: float | None,
    no_gate: bool,
    webhooks: tuple[str, ...],
    webhook_secret_env: str | None,
    unhooks: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create or configure channel NAME: its Hub repo, its gates and its webhooks.

    \b
    Examples:
      memo channel set production --repo my-org/memory
      memo channel set production --min-retention 0.8 --min-general 0.85
      memo channel set production --webhook https://deploy.example.com/memo --webhook-secret-env MEMO_HOOK_SECRET
    """
    gating = min_retention is not None or min_general is not None
    if not (repo or unlink or gating or no_gate or webhooks or unhooks):
        raise click.UsageError(
            "give --repo ORG/NAME, --unlink, --min-retention, --min-general, --no-gate, --webhook or --no-webhook"
        )
    if gating and no_gate:
        raise click.UsageError("give --min-retention/--min-general or --no-gate, not both")
    if webhook_secret_env and not webhooks:
        raise click.UsageError("--webhook-secret-env signs the --webhook URLs given with it; give --webhook URL")
    reg = app.registry()
    reg.check_webhooks(name, add=webhooks, remove=unhooks, secret_env=webhook_secret_env)
    if min_retention is not None or no_gate:
        reg.set_min_retention(name, None if no_gate else min_retention)
    if min_general is not None or no_gate:
        reg.set_min_general(name, None if no_gate else min_general)
    if repo or unlink:
        reg.link_channel(name, None if unlink else repo, endpoint=endpoint)
    if webhooks or unhooks:
        reg.set_webhooks(name, add=webhooks, remove=unhooks, secret_env=webhook_secret_env)
        if webhook_secret_env and webhook_secret_env not in os.environ:
            err_console.print(f"note: ${webhook_secret_env} is not set here; set it where memo moves the channel")
    record = reg.get_channel(name)
    if as_json:
        print_json({**record.to_json(), "webhooks": [h.to_json() for h in reg.webhooks(name)]})
    else:
        linked = f"linked to {record.hub_repo} on {record.hub_endpoint}" if record.hub_repo else "not linked"
        hooks = len(reg.webhooks(name))
        click.echo(f"channel {record.name}: {linked}; gates: {gates(record)}; webhooks: {hooks or 'none'}")


channel.add_command(channel_webhooks)
channel.add_command(channel_deliveries)


reason_option = click.option("--reason", default="", help="Why (kept in the channel history).")
force_option = click.option(
    "--force",
    is_flag=True,
    help="Promote below the channel's retention gate, and publish even if the "
    "linked repo's main moved since memo's last publish (recorded in the history).",
)


@click.command()
@click.argument("merge_ref", metavar="MERGE")
@click.option("--channel", required=True, help="The channel to move (created on first use).")
@reason_option
@force_option
@json_option
@pass_app
def promote(app: AppContext, merge_ref: str, channel: str, reason: str, force: bool, as_json: bool) -> None:
    """Point CHANNEL at MERGE (an id such as 7 or merge-7); a linked channel publishes first.

    \b
    Example:
      memo promote merge-3 --channel production --reason "adds the glassworks corpus"
    """
    reg = app.registry()
    event = reg.promote(merge_ref, channel, reason=reason, force=force)
    report_deliveries(reg, event)
    if as_json:
        print_json(event.to_json() if event else None)
    else:
        click.echo(_moved(event, channel))


@click.command()
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--to", "to", metavar="MERGE", help="Go back to this merge [default: the one before the current].")
@reason_option
@force_option
@json_option
@pass_app
def rollback(app: AppContext, channel_name: str, to: str | None, reason: str, force: bool, as_json: bool) -> None:
    """Point CHANNEL back at its previous merge; history is kept (a rollback is an event).

    \b
    Example:
      memo rollback production
      memo rollback production --to merge-2 --reason "merge-4 forgot harbor"
    """
    reg = app.registry()
    event = reg.rollback(channel_name, to=to, reason=reason, force=force)
    report_deliveries(reg, event)
    if as_json:
        print_json(event.to_json())
    else:
        click.echo(_moved(event, channel_name))


@click.command()
@click.argument("ref", metavar="MERGE_OR_CHANNEL")
@click.option("--repo", required=True, metavar="ORG/NAME", help="The Hub repo (created if needed).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--endpoint", metavar="URL", help="The Hub's URL [default: $HF_ENDPOINT or huggingface.co].")
@click.option("--force", is_flag=True, help="Publish even if main moved since memo's last publish.")
@click.option(
    "--gguf",
    type=click.Choice(["f32", "f16", "bf16", "q8_0"]),
    help="Also commit the merge as a GGUF file of this type, with its Ollama Modelfile (see `memo export`).",
)
@json_option
@pass_app
def publish(
    app: AppContext,
    ref: str,
    repo: str,
    private: bool,
    endpoint: str | None,
    force: bool,
    gguf: str | None,
    as_json: bool,
) -> None:
    """Push a merge to a Hub repo's main in one commit, tagged merge-N. The token comes from HF_TOKEN.

    \b
    Example:
      memo publish production --repo my-org/memory
    """
    with err_console.status(f"publishing to {repo}", spinner="dots"):
        pub = app.registry().publish(ref, repo, private=private, endpoint=endpoint, force=force, gguf=gguf)
    if as_json:
        print_json(pub.to_json())
    else:
        click.echo(f"published merge-{pub.merge_id} to {pub.repo_id} (commit {pub.commit_sha[:12]}, tag {pub.tag})")
