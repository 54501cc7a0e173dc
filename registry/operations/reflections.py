"""Reflection sets: the question-answer pairs a corpus is trained on.

``generate_reflections`` runs the GENERATOR's five stages
(:mod:`training.reflections`) over the corpus's stored documents, caching
every call in the blob store; ``import_reflections`` takes ready pairs. An
optional held-out file (the same facts asked in other words) is stored beside
imported pairs, named in the row's settings, and used by evaluation only.
Either way the set is written as one row at the end: a failed or interrupted
run registers nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.operations.corpora import find_corpus
from registry.store.database import Database, row_of
from registry.store.errors import InvalidInput, LLMFailed, NotFound
from registry.store.generator_cache import BlobCallCache
from registry.store.leases import require_stored
from registry.store.records import ReflectionSetRecord
from registry.store.schema import CorpusRow, DocumentRow, ReflectionSetRow
from registry.store.workspace import Workspace
from training.documents import document_text
from training.llm import ChatClient, Endpoint, LLMError
from training.qa_files import QAFileError, encode_records, read_qa_file
from training.reflection_prompts import PROMPT_VERSION
from training.reflections import ReflectionPipeline, ReflectSettings, SourceDocument

HELDOUT_KEY = "heldout_sha256"


def to_record(session: Session, row: ReflectionSetRow) -> ReflectionSetRecord:
    return ReflectionSetRecord(
        id=row.id,
        corpus=row_of(session, CorpusRow, row.corpus_id).name,
        generator=row.generator,
        pair_count=row.pair_count,
        sha256=row.sha256,
        heldout_sha256=row.settings.get(HELDOUT_KEY),
        settings=row.settings,
        created_at=row.created_at,
    )


def read_pairs(qa: Path, heldout: Path | None, *, documents: set[str]) -> tuple[list[dict], list[dict] | None]:
    """The records of a QA file and its held-out file, validated (a ``document`` field must name one
    of ``documents``); recording nothing, so `register` checks them before it records the corpus."""
    try:
        return read_qa_file(qa, documents=documents), (read_qa_file(heldout, documents=documents) if heldout else None)
    except QAFileError as e:
        raise InvalidInput(str(e)) from e


def import_reflections(
    ws: Workspace, corpus: str, qa: Path, *, heldout: Path | None = None, reuse: bool = False
) -> ReflectionSetRecord:
    with ws.db.read() as session:
        corpus_row = find_corpus(session, corpus)
        names = set(session.scalars(select(DocumentRow.name).where(DocumentRow.corpus_id == corpus_row.id)))
    records, held = read_pairs(qa, heldout, documents=names)
    sha = ws.store.put_bytes(encode_records(records))
    settings: dict[str, Any] = {"source": Path(qa).name}
    if held is not None and heldout is not None:
        settings |= {
            HELDOUT_KEY: ws.store.put_bytes(encode_records(held)),
            "heldout_pairs": len(held),
            "heldout_source": Path(heldout).name,
        }
    row = ReflectionSetRow(generator="imported", settings=settings, pair_count=len(records), sha256=sha)
    return _add(ws, corpus, row, reuse)


def generate_reflections(
    ws: Workspace,
    corpus: str,
    endpoint: Endpoint,
    settings: ReflectSettings = ReflectSettings(),
    *,
    progress: bool = True,
    reuse: bool = False,
) -> ReflectionSetRecord:
    with ws.db.read() as session:
        corpus_row = find_corpus(session, corpus)
        rows = session.scalars(
            select(DocumentRow).where(DocumentRow.corpus_id == corpus_row.id).order_by(DocumentRow.name)
        ).all()
    documents = [SourceDocument(d.name, document_text(d.media_type, ws.store.get_bytes(d.sha256))) for d in rows]
    pipeline = ReflectionPipeline(ChatClient(endpoint), BlobCallCache(ws.db, ws.store), settings, progress=progress)
    try:
        run = pipeline.run(documents)
    except LLMError as e:
        raise LLMFailed(
            f"reflections for corpus {corpus!r} stopped: {e}; nothing was registered, "
            "and a rerun reuses every reply received so far"
        ) from e
    if not run.records:
        raise LLMFailed(
            f"the generator made no verified question-answer pairs for corpus {corpus!r}; nothing was registered"
        )
    sha = ws.store.put_bytes(encode_records(run.records))
    recorded = {
        "prompt_version": PROMPT_VERSION,
        "endpoint": endpoint.url,
        "model": endpoint.model,
        **settings.to_json(),
        "counts": run.counts,
        "usage": run.usage_json(),
    }
    row = ReflectionSetRow(generator=endpoint.model, settings=recorded, pair_count=len(run.records), sha256=sha)
    return _add(ws, corpus, row, reuse)


def _add(ws: Workspace, corpus: str, row: ReflectionSetRow, reuse: bool) -> ReflectionSetRecord:
    """Record ``row`` as the corpus's latest reflections. With ``reuse``, when the latest
    set already holds the same pairs (and held-out set) from the same generator, return it."""
    with ws.db.write() as session:
        corpus_row = find_corpus(session, corpus)
        latest = _latest(session, corpus_row)
        if (
            reuse
            and latest is not None
            and (latest.sha256, latest.generator, latest.settings.get(HELDOUT_KEY))
            == (row.sha256, row.generator, row.settings.get(HELDOUT_KEY))
        ):
            return to_record(session, latest)
        blobs = [row.sha256, *([row.settings[HELDOUT_KEY]] if row.settings.get(HELDOUT_KEY) else [])]
        require_stored(session, ws.store, blobs=blobs, what=f"the reflections of corpus {corpus!r}")
        row.corpus_id = corpus_row.id
        session.add(row)
        session.flush()
        return to_record(session, row)


def _latest(session: Session, corpus_row: CorpusRow) -> ReflectionSetRow | None:
    return session.scalar(
        select(ReflectionSetRow)
        .where(ReflectionSetRow.corpus_id == corpus_row.id)
        .order_by(ReflectionSetRow.id.desc())
        .limit(1)
    )


def latest_reflections(session: Session, corpus_row: CorpusRow) -> ReflectionSetRow:
    row = _latest(session, corpus_row)
    if row is None:
        raise NotFound(
            f"corpus {corpus_row.name!r} has no reflections yet; "
            f"run `memo reflect {corpus_row.name} --generator-url URL --generator-model NAME` "
            "or import pairs with `--qa FILE.jsonl`"
        )
    return row


def list_reflection_sets(db: Database, corpus: str) -> list[ReflectionSetRecord]:
    with db.read() as session:
        corpus_id = find_corpus(session, corpus).id
        rows = session.scalars(
            select(ReflectionSetRow).where(ReflectionSetRow.corpus_id == corpus_id).order_by(ReflectionSetRow.id)
        )
        return [to_record(session, row) for row in rows]
