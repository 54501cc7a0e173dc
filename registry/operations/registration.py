"""Registering a corpus in one go (`memo register`): documents, reflections, training, task vector.

Every input is checked before anything is recorded, so a bad QA file never
leaves a corpus without its reflections. Run again after a failure or a
kill, the same registration picks up where it stopped: the corpus, the
reflections and a finished training are reused, never duplicated, and an
interrupted training resumes from its checkpoint. Under ``accelerate
launch`` one process records the corpus and its reflections, and all train.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from registry.operations import corpora, reflections
from registry.operations.bases import find_base
from registry.operations.fine_tuning import train_corpus
from registry.operations.onto import Onto, start_of
from registry.store.database import Database
from registry.store.errors import InvalidInput
from registry.store.records import ReflectionSetRecord, TaskVectorRecord
from registry.store.workspace import Workspace
from training.distributed import is_main_process, wait_for_everyone
from training.llm import Endpoint
from training.reflections import ReflectSettings
from training.sft import SFTSettings


def check_registration(
    db: Database,
    name: str,
    files: list[Path],
    *,
    base: str,
    qa: Path | None = None,
    heldout: Path | None = None,
    onto: Onto | None = None,
) -> None:
    """Every input of a registration checked, recording nothing."""
    if onto is not None:  # its channel serves a model of this base (or none yet)
        with db.read() as session:
            start_of(session, onto, find_base(session, base).id, name)
    docs = corpora.check_documents(db, name, files, base=base)
    corpora.check_reusable(db, name, base, docs)
    if qa is not None:
        reflections.read_pairs(qa, heldout, documents={d.name for d in docs})


def register(
    ws: Workspace,
    name: str,
    files: list[Path],
    *,
    base: str,
    settings: SFTSettings,
    qa: Path | None = None,
    heldout: Path | None = None,
    generator: tuple[Endpoint, ReflectSettings] | None = None,
    description: str = "",
    storage_dtype: str = "float32",
    device: str = "auto",
    progress: bool = True,
    on_reflections: Callable[[ReflectionSetRecord], None] | None = None,
    onto: Onto | None = None,
) -> TaskVectorRecord | None:
    """The corpus's task vector (None in the helper processes of a multi-process launch)."""
    if (qa is None) == (generator is None):
        raise InvalidInput("give either a QA file (--qa) or a generator (--generator-url/--generator-model)")
    if is_main_process():
        check_registration(ws.db, name, files, base=base, qa=qa, heldout=heldout, onto=onto)
        corpora.add_corpus(ws, name, files, base=base, description=description, reuse=True)
        if generator is not None:
            record = reflections.generate_reflections(ws, name, *generator, progress=progress, reuse=True)
        elif qa is not None:
            record = reflections.import_reflections(ws, name, qa, heldout=heldout, reuse=True)
        if on_reflections is not None:
            on_reflections(record)
    wait_for_everyone()
    return train_corpus(
        ws, name, settings, storage_dtype=storage_dtype, device=device, progress=progress, reuse=True, onto=onto
    )
