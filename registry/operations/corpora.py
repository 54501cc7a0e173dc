"""Corpora: named document sets tied to one base model."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.operations.bases import find_base
from registry.store.blobstore import sha256_file
from registry.store.database import Database, row_of
from registry.store.errors import AlreadyExists, InvalidInput, NotFound
from registry.store.leases import require_stored
from registry.store.names import check_name
from registry.store.records import CorpusRecord, DocumentRecord
from registry.store.schema import BaseModelRow, CorpusRow, DocumentRow, TaskVectorRow
from registry.store.workspace import Workspace
from training.documents import DocumentError, DocumentFile, inspect_documents


def _to_record(session: Session, row: CorpusRow) -> CorpusRecord:
    base = row_of(session, BaseModelRow, row.base_model_id)
    docs = session.scalars(select(DocumentRow).where(DocumentRow.corpus_id == row.id).order_by(DocumentRow.name)).all()
    count, latest = session.execute(
        select(func.count(TaskVectorRow.id), func.max(TaskVectorRow.version)).where(TaskVectorRow.corpus_id == row.id)
    ).one()
    return CorpusRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        base_model=base.name,
        created_at=row.created_at,
        documents=tuple(DocumentRecord(d.name, d.media_type, d.sha256, d.size) for d in docs),
        task_vector_count=count,
        latest_version=latest,
    )


def find_corpus(session: Session, name: str) -> CorpusRow:
    row = session.scalar(select(CorpusRow).where(CorpusRow.name == name))
    if row is None:
        raise NotFound(f"unknown corpus {name!r}; see `memo corpus list`")
    return row


def check_documents(db: Database, name: str, files: list[Path], *, base: str) -> list[DocumentFile]:
    """A corpus's name, base and documents checked, recording nothing; the documents as read."""
    check_name("corpus", name)
    if not files:
        raise InvalidInput(f"corpus {name!r} needs at least one document")
    with db.read() as session:
        find_base(session, base)
    try:
        return inspect_documents([Path(f).expanduser() for f in files])
    except DocumentError as e:
        raise InvalidInput(str(e)) from e


def add_corpus(
    ws: Workspace,
    name: str,
    files: list[Path],
    *,
    base: str,
    description: str = "",
    reuse: bool = False,
) -> CorpusRecord:
    """Record a corpus and its documents. With ``reuse``, an existing corpus of the
    same name, base and documents (byte for byte) is returned instead of refused,
    so an interrupted `memo register` can be run again."""
    docs = check_documents(ws.db, name, files, base=base)
    with ws.db.read() as session:
        existing = session.scalar(select(CorpusRow.id).where(CorpusRow.name == name))
        if existing is not None and not reuse:
            raise AlreadyExists(f"corpus {name!r} already exists; choose another name")
    if existing is not None:
        return _the_same_corpus(ws.db, existing, base, docs)
    # Blobs first, rows last in one transaction: a crash leaves no half corpus.
    shas = [ws.store.put_file(d.path) for d in docs]
    try:
        with ws.db.write() as session:
            base_row = find_base(session, base)
            if session.scalar(select(CorpusRow.id).where(CorpusRow.name == name)) is not None:
                raise AlreadyExists(f"corpus {name!r} already exists; choose another name")
            require_stored(session, ws.store, blobs=shas, what=f"corpus {name!r}")
            row = CorpusRow(name=name, description=description, base_model_id=base_row.id)
            session.add(row)
            session.flush()
            session.add_all(
                DocumentRow(corpus_id=row.id, name=d.name, media_type=d.media_type, sha256=sha, size=d.size)
                for d, sha in zip(docs, shas)
            )
            session.flush()
            return _to_record(session, row)
    except IntegrityError as e:  # lost a race on the unique name
        raise AlreadyExists(f"corpus {name!r} already exists; choose another name") from e


def check_reusable(db: Database, name: str, base: str, docs: list[DocumentFile]) -> None:
    """Refuse (AlreadyExists) when a corpus of this name exists with other documents or another base."""
    with db.read() as session:
        existing = session.scalar(select(CorpusRow.id).where(CorpusRow.name == name))
    if existing is not None:
        _the_same_corpus(db, existing, base, docs)


def _the_same_corpus(db: Database, corpus_id: int, base: str, docs) -> CorpusRecord:
    with db.read() as session:
        record = _to_record(session, row_of(session, CorpusRow, corpus_id))
    wanted = {(d.name, sha256_file(d.path)) for d in docs}
    if record.base_model != base or wanted != {(d.name, d.sha256) for d in record.documents}:
        raise AlreadyExists(
            f"corpus {record.name!r} already exists with other documents or another base "
            f"(see `memo corpus show {record.name}`); choose another name"
        )
    return record


def list_corpora(db: Database) -> list[CorpusRecord]:
    with db.read() as session:
        rows = session.scalars(select(CorpusRow).order_by(CorpusRow.name)).all()
        return [_to_record(session, r) for r in rows]


def get_corpus(db: Database, name: str) -> CorpusRecord:
    with db.read() as session:
        return _to_record(session, find_corpus(session, name))
