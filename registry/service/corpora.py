"""The part of :class:`registry.Registry` that turns corpora into task vectors: documents,
reflections (imported or generated), training, and the task vectors recorded."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.operations import corpora
from registry.operations.onto import onto_of
from registry.service.deferred import (
    fine_tuning,
    reflect,
    reflections,
    registration,
    task_vectors,
    training_defaults,
)
from registry.store.records import BaseModelRecord, CorpusRecord, ReflectionSetRecord, TaskVectorRecord
from registry.store.workspace import Workspace
from training.settings import REHEARSE_SHARE, SFTSettings

if TYPE_CHECKING:
    from training.llm import Endpoint
    from training.reflections import ReflectSettings


class CorporaFacade:
    ws: Workspace

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
            self.ws, name, [Path(f) for f in files], base=base, description=description, reuse=reuse
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
        onto: str | None = None,
        rehearse: float = REHEARSE_SHARE,
    ) -> TaskVectorRecord | None:
        """Register a corpus in one go: documents, reflections (imported from ``qa`` or made by a
        ``generator``), training, task vector. Every input is checked before anything is
        recorded; run again, it reuses what was done (:mod:`registry.operations.registration`).
        ``settings`` None: the base's training defaults (:meth:`training_settings`)."""
        return registration.register(
            self.ws,
            name,
            [Path(f) for f in files],
            base=base,
            settings=settings if settings is not None else self.training_settings(base),
            qa=Path(qa) if qa is not None else None,
            heldout=Path(heldout) if heldout is not None else None,
            generator=generator,
            description=description,
            storage_dtype=storage_dtype,
            device=device,
            progress=progress,
            on_reflections=on_reflections,
            onto=onto_of(onto, rehearse),
        )

    # --- training defaults -----------------------------------------------------------------
    def training_settings(self, base: str, **choices: Any) -> SFTSettings:
        """The fine-tuning settings a training on ``base`` runs with: the base's training defaults (a base
        probed with memo's bank keeps its knowledge: ``training.settings.KEEP_KNOWLEDGE``), each field
        overridden by ``choices``, the rest memo's own defaults (``SFTSettings``)."""
        return training_defaults.training_settings(self.ws.db, base, choices)

    def set_training_defaults(self, base: str, choices: Mapping[str, Any], *, clear: bool = False) -> BaseModelRecord:
        """Choose fine-tuning settings for corpora trained on ``base`` from now on (over those it has;
        ``clear``: over none, so an empty ``choices`` leaves memo's own defaults)."""
        return training_defaults.set_training_defaults(self.ws.db, base, choices, clear=clear)

    def list_corpora(self) -> list[CorpusRecord]:
        return corpora.list_corpora(self.ws.db)

    def get_corpus(self, name: str) -> CorpusRecord:
        return corpora.get_corpus(self.ws.db, name)

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
        return reflections.generate_reflections(
            self.ws, corpus, endpoint, settings or reflect.ReflectSettings(), progress=progress, reuse=reuse
        )

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
            self.ws, corpus, Path(qa), heldout=Path(heldout) if heldout else None, reuse=reuse
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
        onto: str | None = None,
        rehearse: float = REHEARSE_SHARE,
    ) -> TaskVectorRecord | None:
        """Fine-tune the corpus's base on its latest reflections; record the next task vector.

        ``onto``: start from that channel's model instead (the base while it has none), every earlier
        member corpus's reflections making up ``rehearse`` of the examples; ``merge --strategy
        sequential`` (and ``auto``) then serves the result as the channel's members plus this corpus.
        ``device="auto"`` takes a GPU when there is one. Under ``accelerate launch``
        only the main process records (and returns the record); the others return None.
        ``settings`` None: the training defaults of the corpus's base (:meth:`training_settings`).
        """
        if settings is None:
            settings = self.training_settings(self.get_corpus(corpus).base_model)
        return fine_tuning.train_corpus(
            self.ws,
            corpus,
            settings,
            storage_dtype=storage_dtype,
            device=device,
            progress=progress,
            reuse=reuse,
            onto=onto_of(onto, rehearse),
        )

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
            self.ws,
            corpus,
            Path(directory),
            method=method,
            storage_dtype=storage_dtype,
            training=training,
            norms=norms,
            metrics=metrics,
        )

    def list_task_vectors(self, corpus: str) -> list[TaskVectorRecord]:
        return task_vectors.list_task_vectors(self.ws.db, corpus)

    def list_reflection_sets(self, corpus: str) -> list[ReflectionSetRecord]:
        return reflections.list_reflection_sets(self.ws.db, corpus)
