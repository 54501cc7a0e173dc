"""The registry's Python API: ``Registry`` opens a home and runs the operations.

The CLI is a thin layer over this class; so are the later ``train``,
``merge``, ``publish`` and ``rollback`` operations. Every method either
completes or leaves the registry as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from merging.spec import DEFAULT_DENSITY
from registry import (
    bases,
    channels,
    corpora,
    history,
    maintenance,
    merge_inputs,
    merges,
    publishing,
    reflections,
    task_vectors,
)
from registry.store.blobstore import LocalBlobStore
from registry.store.config import Settings, resolve_settings
from registry.store.database import Database, make_engine, row_of
from registry.store.home import blobs_dir, cache_dir, check_home, create_home, work_root
from registry.store.migrations import migrate
from registry.store.records import (
    BaseModelRecord,
    ChannelEventRecord,
    ChannelRecord,
    CorpusRecord,
    GcReport,
    MergeRecord,
    PublicationRecord,
    ReflectionSetRecord,
    TaskVectorRecord,
    VerifyReport,
)

if TYPE_CHECKING:
    from executive.memory import Memory
    from executive.protocol import ProtocolSettings, Trace
    from registry.asking import ChannelSource
    from training.llm import Endpoint
    from training.reflections import ReflectSettings
    from training.retain import RetainSettings
    from training.sft import SFTSettings
    from training.tiny import TinyConfig


class Registry:
    """A memo home (blob store) plus its database, migrated to the current schema."""

    def __init__(self, settings: Settings) -> None:
        check_home(settings.home)
        self.settings = settings
        self.store = LocalBlobStore(blobs_dir(settings.home))
        self.store.create()
        self.db = Database(make_engine(settings.database_url))
        try:
            migrate(self.db, lock_dir=settings.home)
        except BaseException:
            self.db.dispose()
            raise

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None) -> Registry:
        """Open an existing home (``memo init`` makes one)."""
        return cls(resolve_settings(home, database_url))

    @classmethod
    def init(cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None) -> Registry:
        """Create a home if needed, then open it; safe to run again."""
        settings = resolve_settings(home, database_url)
        create_home(settings.home)
        return cls(settings)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- base models -------------------------------------------------------------
    def add_base(self, path: str | os.PathLike[str], *, name: str | None = None) -> BaseModelRecord:
        return bases.add_base(self.db, self.store, Path(path), name=name)

    def create_tiny_base(
        self, name: str, config: TinyConfig | None = None, *, progress: bool = True
    ) -> BaseModelRecord:
        """Build, pre-train (offline) and register a tiny Llama base: for demos and tests."""
        import shutil
        import tempfile

        from registry.examples import examples_dir
        from training.tiny import TinyConfig, create_tiny_base

        bases.check_available(self.db, name)
        work = Path(tempfile.mkdtemp(dir=work_root(self.settings.home), prefix="tiny-"))
        try:
            directory, _ = create_tiny_base(
                work / name, pretrain_dir=examples_dir() / "pretrain", config=config or TinyConfig(), progress=progress
            )
            return self.add_base(directory, name=name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def base_dir(self, name: str) -> Path:
        """The base model as a loadable directory (materialized from the blob store)."""
        from registry.store.schema import BaseModelRow
        from registry.training_ops import base_dir

        record = self.get_base(name)
        with self.db.read() as session:
            return base_dir(self.store, self.settings.home, row_of(session, BaseModelRow, record.id))

    def list_bases(self) -> list[BaseModelRecord]:
        return bases.list_bases(self.db)

    def get_base(self, name: str) -> BaseModelRecord:
        return bases.get_base(self.db, name)

    # --- corpora -----------------------------------------------------------------
    def add_corpus(
        self,
        name: str,
        files: Sequence[str | os.PathLike[str]],
        *,
        base: str,
        description: str = "",
        reuse: bool = False,
    ) -> CorpusRecord:
        """Record a corpus; with ``reuse`` the same corpus (name, base, documents) is returned, not refused."""
        return corpora.add_corpus(
            self.db, self.store, name, [Path(f) for f in files], base=base, description=description, reuse=reuse
        )

    def register(
        self,
        name: str,
        files: Sequence[str | os.PathLike[str]],
        *,
        base: str,
        settings: SFTSettings | None = None,
        qa: str | os.PathLike[str] | None = None,
        heldout: str | os.PathLike[str] | None = None,
        generator: tuple[Endpoint, ReflectSettings] | None = None,
        description: str = "",
        storage_dtype: str = "float32",
        device: str = "auto",
        progress: bool = True,
        on_reflections: Callable[[ReflectionSetRecord], None] | None = None,
    ) -> TaskVectorRecord | None:
        """Register a corpus in one go: documents, reflections (imported from ``qa`` or made by a
        ``generator``), training, task vector. Every input is checked before anything is
        recorded; run again, it reuses what was done (:mod:`registry.registration`)."""
        from registry import registration
        from training.sft import SFTSettings

        return registration.register(
            self.db,
            self.store,
            self.settings.home,
            name,
            [Path(f) for f in files],
            base=base,
            settings=settings or SFTSettings(),
            qa=Path(qa) if qa is not None else None,
            heldout=Path(heldout) if heldout is not None else None,
            generator=generator,
            description=description,
            storage_dtype=storage_dtype,
            device=device,
            progress=progress,
            on_reflections=on_reflections,
        )

    def list_corpora(self) -> list[CorpusRecord]:
        return corpora.list_corpora(self.db)

    def get_corpus(self, name: str) -> CorpusRecord:
        return corpora.get_corpus(self.db, name)

    # --- reflections, training, evaluation --------------------------------------------
    def generate_reflections(
        self,
        corpus: str,
        endpoint: Endpoint,
        settings: ReflectSettings | None = None,
        *,
        progress: bool = True,
        reuse: bool = False,
    ) -> ReflectionSetRecord:
        """Run the GENERATOR's five stages over the corpus's documents; record the pairs as its reflections."""
        from training.reflections import ReflectSettings

        return reflections.generate_reflections(
            self.db, self.store, corpus, endpoint, settings or ReflectSettings(), progress=progress, reuse=reuse
        )

    # --- the memory meets an executive ------------------------------------------------
    def memory(self, ref: str | None = None, *, endpoint: Endpoint | None = None, device: str = "auto") -> Memory:
        """A memory model to question: ``ref`` loaded locally, or the model behind ``endpoint``."""
        from registry import asking

        if endpoint is not None:
            return asking.remote_memory(endpoint)
        return asking.local_memory(self.db, self.store, self.settings.home, ref or "production", device)

    def ask(
        self, question: str, executive: Endpoint, memory: Memory, settings: ProtocolSettings | None = None
    ) -> Trace:
        """MeMo's three-stage Executive–Memory protocol on one question; the trace holds every call."""
        from executive.protocol import ProtocolSettings
        from registry import asking

        return asking.ask(memory, executive, question, settings or ProtocolSettings())

    def evaluate_with_executive(
        self,
        memory: Memory,
        executive: Endpoint,
        corpus: str,
        *,
        settings: ProtocolSettings | None = None,
        heldout: bool = False,
        judge: bool = False,
        limit: int | None = None,
        seed: int = 0,
        on_question: Callable[[int, int], None] | None = None,
    ) -> dict:
        """Accuracy of executive + memory on a corpus's questions (exact match, F1, optional LLM judge)."""
        from executive.protocol import ProtocolSettings
        from registry import asking

        return asking.evaluate_with_executive(
            self.db,
            self.store,
            memory,
            executive,
            corpus,
            settings or ProtocolSettings(),
            heldout=heldout,
            use_judge=judge,
            limit=limit,
            seed=seed,
            on_question=on_question,
        )

    def channel_source(self, channel: str, *, device: str = "auto") -> ChannelSource:
        """The channel's current model, following promotes and rollbacks (what `memo serve` serves)."""
        from registry.asking import ChannelSource
        from registry.training_ops import device_for

        source = ChannelSource(self.db, self.store, self.settings.home, channel, device=device_for(device))
        source.current()  # fail now (unknown channel, no merge) rather than on the first request
        return source

    def import_reflections(
        self,
        corpus: str,
        qa: str | os.PathLike[str],
        *,
        heldout: str | os.PathLike[str] | None = None,
        reuse: bool = False,
    ) -> ReflectionSetRecord:
        """Record ready question-answer pairs (JSON lines) as the corpus's reflections.

        With ``reuse``, when the latest set holds the same pairs, it is returned instead.
        """
        return reflections.import_reflections(
            self.db, self.store, corpus, Path(qa), heldout=Path(heldout) if heldout else None, reuse=reuse
        )

    def train(
        self,
        corpus: str,
        settings: SFTSettings | None = None,
        *,
        storage_dtype: str = "float32",
        device: str = "auto",
        progress: bool = True,
        reuse: bool = False,
    ) -> TaskVectorRecord | None:
        """Fine-tune the corpus's base on its latest reflections; record the next task vector.

        ``device="auto"`` takes a GPU when there is one. Under ``accelerate launch``
        only the main process records (and returns the record); the others return None.
        """
        from registry import training_ops  # torch and transformers load only when needed
        from training.sft import SFTSettings

        return training_ops.train_corpus(
            self.db,
            self.store,
            self.settings.home,
            corpus,
            settings or SFTSettings(),
            storage_dtype=storage_dtype,
            device=device,
            progress=progress,
            reuse=reuse,
        )

    def evaluate(self, ref: str, corpus: str, *, heldout: bool = False, device: str = "auto") -> dict:
        """Exact match and F1 of ``ref`` (model dir, corpus, corpus@vN) on a corpus's questions."""
        from registry import evaluation

        return evaluation.evaluate(self.db, self.store, self.settings.home, ref, corpus, heldout=heldout, device=device)

    # --- task vectors --------------------------------------------------------------
    def add_task_vector(
        self,
        corpus: str,
        directory: str | os.PathLike[str],
        *,
        method: str,
        storage_dtype: str,
        training: dict | None = None,
        norms: dict | None = None,
        metrics: dict | None = None,
    ) -> TaskVectorRecord:
        """Record a directory of delta safetensors as ``corpus``'s next version."""
        return task_vectors.add_task_vector(
            self.db,
            self.store,
            corpus,
            Path(directory),
            method=method,
            storage_dtype=storage_dtype,
            cache_root=cache_dir(self.settings.home, "models"),
            training=training,
            norms=norms,
            metrics=metrics,
        )

    def list_task_vectors(self, corpus: str) -> list[TaskVectorRecord]:
        return task_vectors.list_task_vectors(self.db, corpus)

    # --- merges ---------------------------------------------------------------------
    def merge(
        self,
        corpora: list[str],
        *,
        method: str = "ties",
        density: float = DEFAULT_DENSITY,
        lam: float = 1.0,
        weights: dict[str, float] | None = None,
        channel: str | None = None,
        reason: str = "",
        progress: bool = True,
        evaluate: bool = True,
        device: str = "auto",
        promote: bool = True,
        force: bool = False,
        strategy: str | None = None,
        retain: RetainSettings | None = None,
    ) -> MergeRecord:
        """Merge the latest (or named ``corpus@vN``) task vectors; with ``channel``, promote the result.

        The same corpora versions and parameters give the recorded merge back
        (``record.reused``) instead of computing it again. With ``evaluate``
        (the default) the merge's recall and retention on every member corpus
        are measured and recorded with it. ``strategy`` picks how the corpora
        become one model (:mod:`registry.integration`; by default ``auto``:
        ``warm`` when extending the channel's model, else ``ties+heal``;
        ``"ties"`` for the bare merge); the trained ones stop
        at ``retain.target``, by default the channel's gate (or 0.9).
        ``promote=False`` records the merge with the channel as its parent but
        leaves the channel where it is. A channel's retention gate can refuse
        the promotion (:class:`GateRefused`); the merge stays recorded, and
        ``force`` promotes it anyway.
        """
        from registry.integration import DEFAULT_STRATEGY

        params = merge_inputs.MergeParams(
            method=method, density=density, lam=lam, weights=tuple(sorted((weights or {}).items()))
        )
        record = merges.create_merge(
            self.db,
            self.store,
            self.settings.home,
            list(corpora),
            params,
            channel=channel,
            progress=progress,
            evaluate=evaluate,
            device=device,
            strategy=strategy or DEFAULT_STRATEGY,
            retain=self.retain_settings(retain, channel),
        )
        if channel is not None and promote:
            self.promote(record.id, channel, reason=reason or f"memo merge {' '.join(corpora)}", force=force)
        return record

    def retain_settings(self, retain: RetainSettings | None, channel: str | None) -> RetainSettings:
        """``retain`` with the channel's gate as its target where none is given (else the
        strategy's default, :func:`registry.integration.settle`)."""
        from dataclasses import replace

        from training.retain import RetainSettings

        retain = retain or RetainSettings()
        if retain.target is not None or channel is None:
            return retain
        gate = next((c.min_retention for c in self.list_channels() if c.name == channel), None)
        return replace(retain, target=gate) if gate else retain

    def list_merges(self) -> list[MergeRecord]:
        return merges.list_merges(self.db)

    def get_merge(self, ref: str | int) -> MergeRecord:
        """A merge by id (``7``, ``merge-7``) or a channel's current merge."""
        return merges.get_merge(self.db, ref)

    # --- channels ----------------------------------------------------------------------
    def list_channels(self) -> list[ChannelRecord]:
        return channels.list_channels(self.db)

    def get_channel(self, name: str) -> ChannelRecord:
        return channels.get_channel(self.db, name)

    def link_channel(self, name: str, repo: str | None, *, endpoint: str | None = None) -> ChannelRecord:
        """Link a channel to a Hub repo (``None``: unlink); a linked channel publishes as it moves."""
        if repo is None:
            return channels.configure(self.db, name, unlink=True)
        target = publishing.HubTarget.of(repo, endpoint)
        return channels.configure(self.db, name, hub_repo=target.repo_id, hub_endpoint=target.endpoint)

    def set_min_retention(self, name: str, value: float | None) -> ChannelRecord:
        """Gate a channel: promotions of merges below ``value`` retention on any corpus are refused (None: no gate)."""
        return channels.configure(self.db, name, min_retention=value)

    def promote(
        self, merge: str | int, channel: str, *, reason: str = "", force: bool = False
    ) -> ChannelEventRecord | None:
        """Point ``channel`` at a merge (None if it already does); publishes first when linked.

        ``force`` overrides the channel's retention gate (recorded in the
        history) and publishes over a Hub ``main`` that moved.
        """
        return channels.promote(
            self.db, merge, channel, reason=reason, forced=force, publish=self._channel_publisher(force)
        )

    def rollback(
        self, channel: str, *, to: str | int | None = None, reason: str = "", force: bool = False
    ) -> ChannelEventRecord:
        """Point ``channel`` back at its previous merge (or ``to``); publishes first when linked."""
        return channels.rollback(self.db, channel, to=to, reason=reason, publish=self._channel_publisher(force))

    def _channel_publisher(self, force: bool) -> channels.Publisher:
        def publish(merge_id: int, channel: ChannelRecord) -> None:
            if channel.hub_repo is None:
                return
            target = publishing.HubTarget.of(channel.hub_repo, channel.hub_endpoint)
            publishing.publish_merge(
                self.db, self.store, self.settings.home, merge_id, target, channel=channel.name, force=force
            )

        return publish

    # --- export and publishing ----------------------------------------------------------
    def export(self, ref: str | int, directory: str | os.PathLike[str]) -> Path:
        """Write a merge (or a channel's merge) as a standard Hugging Face model directory."""
        return publishing.export_merge(self.db, self.store, self.settings.home, ref, Path(directory))

    def publish(
        self, ref: str | int, repo: str, *, private: bool = False, endpoint: str | None = None, force: bool = False
    ) -> PublicationRecord:
        """Push a merge (or a channel's merge) to a Hub repo's ``main`` in one commit, tagged ``merge-N``.

        Publishing a channel that is not linked to a repo yet links it: its
        later promotions and rollbacks publish to the same repo.
        """
        target = publishing.HubTarget.of(repo, endpoint, private=private)
        channel = str(ref) if not merges.is_merge_ref(str(ref)) else None
        publication = publishing.publish_merge(
            self.db, self.store, self.settings.home, ref, target, channel=channel, force=force
        )
        if channel is not None and not self.get_channel(channel).hub_repo:
            # From now on the channel's promotions and rollbacks publish there too.
            channels.configure(self.db, channel, hub_repo=target.repo_id, hub_endpoint=target.endpoint)
        return publication

    def publications(self, ref: str | int | None = None) -> list[PublicationRecord]:
        return publishing.list_publications(self.db, ref)

    # --- history -----------------------------------------------------------------
    def log(self, channel: str | None = None) -> list[ChannelEventRecord]:
        return history.channel_log(self.db, channel)

    # --- maintenance -------------------------------------------------------------
    def verify(self, *, progress: Callable[[str], None] | None = None) -> VerifyReport:
        return maintenance.verify(self.db, self.store, progress=progress)

    def gc(
        self, *, dry_run: bool = True, grace_seconds: float = maintenance.DEFAULT_GC_GRACE_SECONDS, caches: bool = False
    ) -> GcReport:
        return maintenance.gc(
            self.db, self.store, dry_run=dry_run, grace_seconds=grace_seconds, home=self.settings.home, caches=caches
        )
