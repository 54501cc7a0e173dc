"""`memo channel webhooks` and `memo channel deliveries`: who hears of a channel's moves, and what
each was told; and the line a move prints for each delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, json_option, print_json, print_table

if TYPE_CHECKING:  # `memo --help` loads no registry
    from registry import ChannelEventRecord, DeliveryRecord, Registry


def _outcome(d: DeliveryRecord) -> str:
    if d.status == "delivered":
        return f"delivered (HTTP {d.http_status})"
    if d.status == "sending":
        return "sending (no outcome recorded yet)"
    tries = f" after {d.attempts} attempt{'s' if d.attempts != 1 else ''}" if d.attempts else ""
    return f"failed{tries}: {d.error}"


def report_deliveries(reg: Registry, event: ChannelEventRecord | None) -> None:
    """One line on stderr per webhook told of ``event`` (a failure does not undo the move)."""
    if event is None:
        return
    for d in reg.deliveries(event.channel, event_id=event.id):
        err_console.print(f"webhook {d.url}: {_outcome(d)}", markup=False, highlight=False)


@click.command("webhooks")
@click.argument("name")
@json_option
@pass_app
def channel_webhooks(app: AppContext, name: str, as_json: bool) -> None:
    """List the URLs told of channel NAME's promotions, rollbacks and gate refusals.

    \b
    Example:
      memo channel set production --webhook https://deploy.example.com/memo --webhook-secret-env MEMO_HOOK_SECRET
      memo channel webhooks production
    """
    hooks = app.registry().webhooks(name)
    if as_json:
        print_json([h.to_json() for h in hooks])
    else:
        rows = [
            (h.url, f"${h.secret_env}" if h.secret_env else "unsigned", f"{h.created_at:%Y-%m-%d %H:%M}") for h in hooks
        ]
        print_table(f"webhooks of {name}", ["url", "signed with", "since"], rows)


@click.command("deliveries")
@click.argument("name")
@json_option
@pass_app
def channel_deliveries(app: AppContext, name: str, as_json: bool) -> None:
    """List what channel NAME's webhooks were told: each event, delivered or failed, and why.

    \b
    Example:
      memo channel deliveries production
    """
    deliveries = app.registry().deliveries(name)
    if as_json:
        print_json([d.to_json() for d in deliveries])
    else:
        print_table(
            f"webhook deliveries of {name}",
            ["event", "action", "url", "outcome", "at"],
            [(d.event_id, d.action, d.url, _outcome(d), f"{d.created_at:%Y-%m-%d %H:%M:%S}") for d in deliveries],
        )
