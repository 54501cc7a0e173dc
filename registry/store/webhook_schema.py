"""The channel webhook tables (``registry.store.schema`` imports them onto its metadata)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.store.schema_base import ENDPOINT_LEN, NAME_LEN, Base, UTCDateTime, created_column


class ChannelWebhookRow(Base):
    """A URL told of every move of a channel (promote, rollback, a gate's refusal) after it is recorded.

    The secret is never stored: ``secret_env`` names the environment variable that holds it where
    memo runs. A removed webhook keeps its row (its deliveries refer to it), marked inactive; adding
    the URL again makes it active from that point of the history on.
    """

    __tablename__ = "channel_webhook"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="RESTRICT"))
    url: Mapped[str] = mapped_column(String(ENDPOINT_LEN))
    secret_env: Mapped[str | None] = mapped_column(String(NAME_LEN))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    after_event_id: Mapped[int] = mapped_column(Integer, default=0)  # events up to this one are not its to tell
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (UniqueConstraint("channel_id", "url"),)


class WebhookDeliveryRow(Base):
    """One channel event told to one webhook: claimed as ``sending`` before the first attempt (so two
    processes never send it twice), then ``delivered`` or ``failed`` with what the last attempt got."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("channel_webhook.id", ondelete="RESTRICT"))
    event_id: Mapped[int] = mapped_column(ForeignKey("channel_event.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        CheckConstraint("status IN ('sending', 'delivered', 'failed')", name="status_known"),
    )
