"""Webhooks: every move of a channel told, as signed JSON, to the URLs the channel names. This module
keeps the receivers; :mod:`registry.operations.webhook_deliveries` tells them.

A promotion, a rollback and a gate's refusal are recorded first; only then is each active webhook
of the channel told of every event it has not been told of yet (the outbox is the channel's own
history). A delivery is claimed in the database before its first attempt, so two processes never
send the same event to the same receiver twice, and closed as ``delivered`` or ``failed``; a
failing or hanging receiver costs a bounded wait and never blocks or undoes the move. Receivers
run in parallel, each with :mod:`registry.operations.webhook_post`'s retries.

The signing secret is never stored: a webhook names the environment variable that holds it
(``--webhook-secret-env``), read by the process that moves the channel. A webhook whose variable is
not set there is not sent to (unsigned messages would be taken as memo's by a receiver that does
not check), and the failed delivery says why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.operations.channels import find_channel, lock_or_create
from registry.store.database import Database
from registry.store.errors import InvalidInput, NotFound
from registry.store.names import check_name
from registry.store.schema import ENDPOINT_LEN, ChannelEventRow, ChannelRow, ChannelWebhookRow
from registry.store.webhook_records import WebhookRecord

TIMEOUT_ENV = "MEMO_WEBHOOK_TIMEOUT"  # seconds each attempt waits for an answer
DEFAULT_TIMEOUT_S = 5.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > ENDPOINT_LEN:
        raise InvalidInput(
            f"a webhook is an http:// or https:// URL with a host (at most {ENDPOINT_LEN} characters), not {url!r}"
        )
    return url


def check_secret_env(name: str | None) -> str | None:
    if name is not None and not _ENV_NAME.fullmatch(name):
        raise InvalidInput(f"--webhook-secret-env names an environment variable (letters, digits, _), not {name!r}")
    return name


def timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidInput(f"${TIMEOUT_ENV} is seconds above 0, not {raw!r}")
    return value


def _webhook_record(row: ChannelWebhookRow, channel: str) -> WebhookRecord:
    return WebhookRecord(row.id, channel, row.url, row.secret_env, row.active, row.created_at)


def _configured(session: Session, channel: ChannelRow, what: str) -> int:
    event = ChannelEventRow(channel_id=channel.id, action="configure", reason=what)
    session.add(event)
    session.flush()
    return event.id


def set_webhooks(
    db: Database, channel: str, *, add: Sequence[str] = (), remove: Sequence[str] = (), secret_env: str | None = None
) -> list[WebhookRecord]:
    """Tell the ``add`` URLs of the channel's moves from now on (signed with ``secret_env``'s secret)
    and stop telling the ``remove`` ones, all or nothing; the channel is created by a first webhook.
    Returns the channel's webhooks."""
    check_webhooks(db, channel, add=add, remove=remove, secret_env=secret_env)
    with db.write() as session:
        row = lock_or_create(session, channel) if add else find_channel(session, channel)
        for url in add:
            found = _hook(session, row.id, url, active_only=False)
            hook = found if found is not None else ChannelWebhookRow(channel_id=row.id, url=url)
            session.add(hook)
            hook.secret_env, hook.active = secret_env, True
            signed = f"signed with ${secret_env}" if secret_env else "unsigned"
            hook.after_event_id = _configured(session, row, f"webhook {url} ({signed})")
        for url in remove:
            gone = _hook(session, row.id, url, active_only=True)
            if gone is None:  # removed by another process since the check
                raise NotFound(f"channel {channel!r} has no webhook {url!r}; see `memo channel webhooks {channel}`")
            gone.active = False
            _configured(session, row, f"webhook {url} removed")
    return list_webhooks(db, channel)


def check_webhooks(
    db: Database, channel: str, *, add: Sequence[str] = (), remove: Sequence[str] = (), secret_env: str | None = None
) -> None:
    """Refuse, changing nothing, what :func:`set_webhooks` would refuse."""
    check_name("channel", channel)
    for url in add:
        check_url(url)
    check_secret_env(secret_env)
    if remove:
        with db.read() as session:
            row = find_channel(session, channel)
            for url in remove:
                if _hook(session, row.id, url, active_only=True) is None:
                    raise NotFound(f"channel {channel!r} has no webhook {url!r}; see `memo channel webhooks {channel}`")


def _hook(session: Session, channel_id: int, url: str, *, active_only: bool) -> ChannelWebhookRow | None:
    query = select(ChannelWebhookRow).where(ChannelWebhookRow.channel_id == channel_id, ChannelWebhookRow.url == url)
    return session.scalar(query.where(ChannelWebhookRow.active) if active_only else query)


def list_webhooks(db: Database, channel: str | None = None) -> list[WebhookRecord]:
    with db.read() as session:
        query = select(ChannelWebhookRow, ChannelRow.name).join(
            ChannelRow, ChannelRow.id == ChannelWebhookRow.channel_id
        )
        if channel is not None:
            query = query.where(ChannelRow.id == find_channel(session, channel).id)
        rows = session.execute(query.where(ChannelWebhookRow.active).order_by(ChannelWebhookRow.id)).all()
        return [_webhook_record(hook, name) for hook, name in rows]
