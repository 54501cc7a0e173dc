"""Channel history: the append-only log of promotions and rollbacks."""

from __future__ import annotations

from sqlalchemy import select

from registry.store.database import Database
from registry.store.errors import NotFound
from registry.store.records import ChannelEventRecord
from registry.store.schema import ChannelEventRow, ChannelRow


def channel_log(db: Database, channel: str | None = None) -> list[ChannelEventRecord]:
    with db.read() as session:
        query = select(ChannelEventRow, ChannelRow.name).join(ChannelRow, ChannelRow.id == ChannelEventRow.channel_id)
        if channel is not None:
            if session.scalar(select(ChannelRow.id).where(ChannelRow.name == channel)) is None:
                raise NotFound(f"unknown channel {channel!r}; see `memo channel list`")
            query = query.where(ChannelRow.name == channel)
        rows = session.execute(query.order_by(ChannelEventRow.id)).all()
        return [
            ChannelEventRecord(
                id=e.id,
                channel=name,
                action=e.action,
                from_merge_id=e.from_merge_id,
                to_merge_id=e.to_merge_id,
                reason=e.reason,
                forced=e.forced,
                created_at=e.created_at,
            )
            for e, name in rows
        ]
