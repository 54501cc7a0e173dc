"""The part of :class:`registry.Registry` that moves and publishes channels: promote, roll back,
gate, link to a Hub repo, export, publish, and the channels' history."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry.operations import (
    channels,
    gguf_exports,
    history,
    publishing,
    webhook_deliveries,
    webhooks,
)
from registry.store.errors import GateRefused
from registry.store.export_records import GGUFExportRecord
from registry.store.records import (
    ChannelEventRecord,
    ChannelRecord,
    PublicationRecord,
)
from registry.store.webhook_records import DeliveryRecord, WebhookRecord
from registry.store.workspace import Workspace


class ChannelsFacade:
    ws: Workspace

    def list_channels(self) -> list[ChannelRecord]:
        return channels.list_channels(self.ws.db)

    def get_channel(self, name: str) -> ChannelRecord:
        return channels.get_channel(self.ws.db, name)

    def link_channel(self, name: str, repo: str | None, *, endpoint: str | None = None) -> ChannelRecord:
        """Link a channel to a Hub repo (``None``: unlink); a linked channel publishes as it moves."""
        if repo is None:
            return channels.configure(self.ws.db, name, unlink=True)
        target = publishing.HubTarget.of(repo, endpoint)
        return channels.configure(self.ws.db, name, hub_repo=target.repo_id, hub_endpoint=target.endpoint)

    def set_min_retention(self, name: str, value: float | None) -> ChannelRecord:
        """Gate a channel: promotions of merges below ``value`` retention on any corpus are refused (None: no gate)."""
        return channels.configure(self.ws.db, name, min_retention=value)

    def set_min_general(self, name: str, value: float | None) -> ChannelRecord:
        """Gate a channel: promotions of merges that keep less than ``value`` of the base's general
        knowledge (its probe set) are refused (None: no gate)."""
        return channels.configure(self.ws.db, name, min_general=value)

    def promote(
        self, merge: str | int, channel: str, *, reason: str = "", force: bool = False, expected: Any = channels.KEEP
    ) -> ChannelEventRecord | None:
        """Point ``channel`` at a merge (None if it already does); publishes first when linked.

        ``force`` overrides the channel's retention gate (recorded in the
        history) and publishes over a Hub ``main`` that moved. The channel's webhooks are told of
        the move, or of the gate's refusal, once it is recorded.
        """
        wait = webhooks.timeout()
        try:
            event = channels.promote(
                self.ws.db,
                merge,
                channel,
                reason=reason,
                forced=force,
                publish=publishing.channel_publisher(self.ws, force=force),
                expected=expected,
            )
        except GateRefused:
            webhook_deliveries.notify(self.ws.db, channel, wait)
            raise
        if event is not None:
            webhook_deliveries.notify(self.ws.db, channel, wait)
        return event

    def rollback(
        self, channel: str, *, to: str | int | None = None, reason: str = "", force: bool = False
    ) -> ChannelEventRecord:
        """Point ``channel`` back at its previous merge (or ``to``); publishes first when linked."""
        wait = webhooks.timeout()
        publisher = publishing.channel_publisher(self.ws, force=force)
        event = channels.rollback(self.ws.db, channel, to=to, reason=reason, publish=publisher)
        webhook_deliveries.notify(self.ws.db, channel, wait)
        return event

    # --- webhooks ------------------------------------------------------------------
    def set_webhooks(
        self, channel: str, *, add: Sequence[str] = (), remove: Sequence[str] = (), secret_env: str | None = None
    ) -> list[WebhookRecord]:
        """Tell the ``add`` URLs of every later promotion, rollback and gate refusal of ``channel``
        (JSON, signed with HMAC-SHA256 under the secret in the environment variable ``secret_env`` when
        given) and stop telling the ``remove`` ones; all or nothing. Returns the channel's webhooks."""
        return webhooks.set_webhooks(self.ws.db, channel, add=add, remove=remove, secret_env=secret_env)

    def check_webhooks(
        self, channel: str, *, add: Sequence[str] = (), remove: Sequence[str] = (), secret_env: str | None = None
    ) -> None:
        """Raise what :meth:`set_webhooks` would refuse, changing nothing (to check before other changes)."""
        webhooks.check_webhooks(self.ws.db, channel, add=add, remove=remove, secret_env=secret_env)

    def webhooks(self, channel: str | None = None) -> list[WebhookRecord]:
        return webhooks.list_webhooks(self.ws.db, channel)

    def deliveries(self, channel: str | None = None, *, event_id: int | None = None) -> list[DeliveryRecord]:
        """What the webhooks were told: delivered, failed (with why) or still sending."""
        return webhook_deliveries.list_deliveries(self.ws.db, channel, event_id=event_id)

    # --- export and publishing ----------------------------------------------------------
    def export(self, ref: str | int, directory: str | os.PathLike[str]) -> Path:
        """Write a merge (or a channel's merge) as a standard Hugging Face model directory."""
        return publishing.export_merge(self.ws, ref, Path(directory))

    def export_gguf(
        self,
        ref: str | int,
        directory: str | os.PathLike[str],
        *,
        quant: str = "q8_0",
        min_retention: float | None = None,
        device: str = "auto",
    ) -> GGUFExportRecord:
        """Write a merge (or a channel's merge) as one GGUF file for llama.cpp and Ollama, with a
        Modelfile beside it, after asking the file every member corpus's questions: refused, writing
        nothing, when it keeps less than ``min_retention`` (a channel's gate when a channel is given)."""
        return gguf_exports.export_gguf_merge(
            self.ws,
            str(ref),
            Path(directory),
            quant=quant,
            device=device,
            min_retention=min_retention,
        )

    def publish(
        self,
        ref: str | int,
        repo: str,
        *,
        private: bool = False,
        endpoint: str | None = None,
        force: bool = False,
        gguf: str | None = None,
    ) -> PublicationRecord:
        """Push a merge (or a channel's merge) to a Hub repo's ``main`` in one commit, tagged ``merge-N``.

        Publishing a channel that is not linked to a repo yet links it: its
        later promotions and rollbacks publish to the same repo. With ``gguf`` (``q8_0``, ``f16``...)
        the commit also holds the merge's GGUF file and Ollama Modelfile, gated like an export.
        """
        target = publishing.HubTarget.of(repo, endpoint, private=private)
        return publishing.publish(self.ws, ref, target, force=force, gguf=gguf)

    def publications(self, ref: str | int | None = None) -> list[PublicationRecord]:
        return publishing.list_publications(self.ws.db, ref)

    # --- history -----------------------------------------------------------------
    def log(self, channel: str | None = None) -> list[ChannelEventRecord]:
        return history.channel_log(self.ws.db, channel)
