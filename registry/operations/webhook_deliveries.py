"""Telling a channel's webhooks of the events they have not heard of, and what each was told.

See :mod:`registry.operations.webhooks` for the contract: claimed before sending, closed after,
parallel across receivers, never raising for a receiver's failure.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.operations.channels import find_channel
from registry.operations.merges import to_record as merge_record
from registry.operations.webhook_post import PostOutcome, post
from registry.store.database import Database
from registry.store.schema import (
    ChannelEventRow,
    ChannelRow,
    ChannelWebhookRow,
    MergeRow,
    PublicationRow,
    WebhookDeliveryRow,
    utcnow,
)
from registry.store.version import memo_version
from registry.store.webhook_records import DeliveryRecord

TOLD = ("promote", "rollback", "refused")  # the events a webhook hears of


@dataclass(frozen=True)
class _Claim:
    delivery_id: int
    url: str
    secret_env: str | None
    action: str
    body: bytes


def notify(db: Database, channel: str, wait: float) -> None:
    """Tell every active webhook of ``channel`` each event it has not been told of, waiting at most
    ``wait`` seconds for each answer (:func:`registry.operations.webhooks.timeout`)."""
    claims = _claim_pending(db, channel)
    if not claims:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(claims))) as pool:
        outcomes = list(pool.map(lambda c: _send(c, wait), claims))
    with db.write() as session:
        for claim, outcome in zip(claims, outcomes):
            row = session.get(WebhookDeliveryRow, claim.delivery_id)
            assert row is not None  # claimed above; deliveries are never deleted
            row.status = "delivered" if outcome.delivered else "failed"
            row.attempts, row.http_status, row.error = outcome.attempts, outcome.http_status, outcome.error
            row.finished_at = utcnow()


def _send(claim: _Claim, wait: float) -> PostOutcome:
    secret = os.environ.get(claim.secret_env) if claim.secret_env else None
    if claim.secret_env and not secret:
        return PostOutcome(False, 0, None, f"not sent: ${claim.secret_env}, its signing secret, is not set here")
    headers = {
        "X-Memo-Event": claim.action,
        "X-Memo-Delivery": str(claim.delivery_id),
        "User-Agent": f"memo/{memo_version()}",
    }
    return post(claim.url, claim.body, headers, secret=secret, timeout=wait)


def _claim_pending(db: Database, channel: str) -> list[_Claim]:
    """A ``sending`` row for each (webhook, event) not told yet, each in its own transaction: a pair
    another process claimed first fails the unique key and is left to it."""
    with db.read() as session:
        pending = _pending(session, channel)
        pairs = [(hook.id, hook.url, hook.secret_env, event.id, event.action) for hook, event in pending]
        bodies = {event_id: _body(session, event_id) for *_, event_id, _ in pairs}
    claims = []
    for hook_id, url, secret_env, event_id, action in pairs:
        try:
            with db.write() as session:
                row = WebhookDeliveryRow(webhook_id=hook_id, event_id=event_id, status="sending", error="")
                session.add(row)
                session.flush()
                claims.append(_Claim(row.id, url, secret_env, action, bodies[event_id]))
        except IntegrityError:
            continue
    return claims


def _pending(session: Session, channel: str) -> list[tuple[ChannelWebhookRow, ChannelEventRow]]:
    told = exists().where(
        WebhookDeliveryRow.webhook_id == ChannelWebhookRow.id, WebhookDeliveryRow.event_id == ChannelEventRow.id
    )
    query = (
        select(ChannelWebhookRow, ChannelEventRow)
        .join(ChannelEventRow, ChannelEventRow.channel_id == ChannelWebhookRow.channel_id)
        .where(
            ChannelWebhookRow.channel_id == find_channel(session, channel).id,
            ChannelWebhookRow.active,
            ChannelEventRow.id > ChannelWebhookRow.after_event_id,
            ChannelEventRow.action.in_(TOLD),
            ~told,
        )
        .order_by(ChannelEventRow.id, ChannelWebhookRow.id)
    )
    return [(hook, event) for hook, event in session.execute(query).all()]


def _ref(merge_id: int | None) -> str | None:
    return f"merge-{merge_id}" if merge_id is not None else None


def _body(session: Session, event_id: int) -> bytes:
    """The JSON an event is told as: the move, the merge it goes to with its figures, the Hub commit."""
    event = session.get(ChannelEventRow, event_id)
    assert event is not None
    channel = session.get(ChannelRow, event.channel_id)
    assert channel is not None
    payload = {
        "event": event.id,
        "channel": channel.name,
        "action": event.action,
        "from": _ref(event.from_merge_id),
        "to": _ref(event.to_merge_id),
        "reason": event.reason,
        "forced": event.forced,
        "at": event.created_at.isoformat(),
        "merge": _merge_figures(session, event.to_merge_id),
        "hub": _hub_commit(session, event) if event.action != "refused" else None,
    }
    return json.dumps(payload, sort_keys=True).encode()


def _merge_figures(session: Session, merge_id: int | None) -> dict | None:
    row = session.get(MergeRow, merge_id) if merge_id is not None else None
    if row is None:
        return None
    merge = merge_record(session, row)
    return {
        "id": merge.ref,
        "base_model": merge.base_model,
        "strategy": merge.strategy,
        "members": [m.ref for m in merge.members],
        "recall": {corpus: r.exact_match for corpus, r in merge.recall.items()},
        "retention": merge.retention,
        "general_kept": merge.general.kept if merge.general else None,
    }


def _hub_commit(session: Session, event: ChannelEventRow) -> dict | None:
    """The channel's last publication of the merge it moved to (a linked channel publishes first)."""
    pub = session.scalar(
        select(PublicationRow)
        .where(PublicationRow.channel_id == event.channel_id, PublicationRow.merge_id == event.to_merge_id)
        .order_by(PublicationRow.id.desc())
        .limit(1)
    )
    if pub is None:
        return None
    return {"repo": pub.repo_id, "endpoint": pub.endpoint, "commit": pub.commit_sha, "tag": pub.tag}


def list_deliveries(db: Database, channel: str | None = None, *, event_id: int | None = None) -> list[DeliveryRecord]:
    """What the channel's webhooks were told (every channel's without one; of one event with
    ``event_id``), oldest first."""
    with db.read() as session:
        query = (
            select(WebhookDeliveryRow, ChannelWebhookRow.url, ChannelRow.name, ChannelEventRow.action)
            .join(ChannelWebhookRow, ChannelWebhookRow.id == WebhookDeliveryRow.webhook_id)
            .join(ChannelRow, ChannelRow.id == ChannelWebhookRow.channel_id)
            .join(ChannelEventRow, ChannelEventRow.id == WebhookDeliveryRow.event_id)
        )
        if channel is not None:
            query = query.where(ChannelRow.id == find_channel(session, channel).id)
        if event_id is not None:
            query = query.where(WebhookDeliveryRow.event_id == event_id)
        return [
            DeliveryRecord(
                id=d.id,
                channel=name,
                url=url,
                event_id=d.event_id,
                action=action,
                status=d.status,
                attempts=d.attempts,
                http_status=d.http_status,
                error=d.error,
                created_at=d.created_at,
                finished_at=d.finished_at,
            )
            for d, url, name, action in session.execute(query.order_by(WebhookDeliveryRow.id)).all()
        ]
