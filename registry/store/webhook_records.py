"""Frozen records of channel webhooks and what each was told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from registry.store.records import Record


@dataclass(frozen=True)
class WebhookRecord(Record):
    id: int
    channel: str
    url: str
    secret_env: str | None  # the environment variable holding the signing secret (the secret is never stored)
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRecord(Record):
    id: int
    channel: str
    url: str
    event_id: int
    action: str  # the event told: promote, rollback or refused
    status: str  # sending (claimed, not yet answered), delivered or failed
    attempts: int
    http_status: int | None  # what the receiver answered last (None: no answer)
    error: str
    created_at: datetime
    finished_at: datetime | None
