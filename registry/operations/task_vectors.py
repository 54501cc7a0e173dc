"""Task vectors: versioned per corpus, stored as safetensors blobs behind a manifest.

Versions are allocated inside the write transaction that inserts the row,
with the corpus row locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so concurrent trainings of
one corpus get v1, v2, ... without gaps or duplicates.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from merging.checkpoint import Checkpoint, open_checkpoint
from merging.errors import CheckpointError
from registry.operations.corpora import find_corpus
from registry.store.database import Database, row_of
from registry.store.errors import Conflict, Corrupt, InvalidInput, NotFound
from registry.store.leases import require_stored
from registry.store.manifests import store_directory
from registry.store.names import row_number
from registry.store.records import TaskVectorMetrics, TaskVectorRecord
from registry.store.schema import BaseModelRow, CorpusRow, TaskVectorRow
from registry.store.workspace import Workspace

_REF = re.compile(r"(?P<corpus>[^@]+)(@v(?P<version>\d+))?")


def find_task_vector(session, ref: str) -> TaskVectorRow:
    match = _REF.fullmatch(ref)
    if not match:
        raise InvalidInput(f"{ref!r} is not a corpus name or corpus@vN")
    corpus_row = find_corpus(session, match["corpus"])
    query = select(TaskVectorRow).where(TaskVectorRow.corpus_id == corpus_row.id)
    if match["version"]:
        query = query.where(TaskVectorRow.version == (row_number(match["version"], "version") or -1))
    row = session.scalar(query.order_by(TaskVectorRow.version.desc()).limit(1))
    if row is None:
        what = f"version {match['version']}" if match["version"] else "task vector"
        raise NotFound(f"corpus {corpus_row.name!r} has no {what}; run `memo train {corpus_row.name}`")
    return row


def _to_record(session: Session, row: TaskVectorRow) -> TaskVectorRecord:
    return TaskVectorRecord(
        id=row.id,
        corpus=row_of(session, CorpusRow, row.corpus_id).name,
        version=row.version,
        base_model=row_of(session, BaseModelRow, row.base_model_id).name,
        method=row.method,
        storage_dtype=row.storage_dtype,
        manifest_sha256=row.manifest_sha256,
        training=row.training,
        norms=row.norms,
        metrics=TaskVectorMetrics.from_json(row.metrics),
        created_at=row.created_at,
        trained_onto=f"merge-{row.start_merge_id}" if row.start_merge_id is not None else None,
    )


def find_trained(
    session: Session,
    corpus: CorpusRow,
    reflection_set_id: int,
    training: dict[str, Any],
    storage_dtype: str,
    start_merge_id: int | None = None,
    rehearse: float | None = None,
    replay_set: str | None = None,
) -> TaskVectorRecord | None:
    """The corpus's task vector already trained on these reflections with these settings (from the
    same start, rehearsing the same way, drawing replayed answers from the same ``replay_set``), if any."""
    rows = session.scalars(
        select(TaskVectorRow)
        .where(
            TaskVectorRow.corpus_id == corpus.id,
            TaskVectorRow.reflection_set_id == reflection_set_id,
            TaskVectorRow.storage_dtype == storage_dtype,
            TaskVectorRow.start_merge_id.is_(None)
            if start_merge_id is None
            else TaskVectorRow.start_merge_id == start_merge_id,
        )
        .order_by(TaskVectorRow.version.desc())
    ).all()
    wanted = json.loads(json.dumps(training))
    for row in rows:
        same = row.training.get("sft") == wanted and (row.training.get("rehearsal") or {}).get("share") == rehearse
        if same and (row.training.get("mixture") or {}).get("replay_set") == replay_set:
            return replace(_to_record(session, row), reused=True)
    return None


def next_version(session: Session, corpus: CorpusRow) -> int:
    """The next version of a corpus's task vector; call inside a write transaction."""
    session.execute(select(CorpusRow.id).where(CorpusRow.id == corpus.id).with_for_update())
    latest = session.scalar(select(func.max(TaskVectorRow.version)).where(TaskVectorRow.corpus_id == corpus.id))
    return (latest or 0) + 1


def _check_against_base(tv: Checkpoint, base: Checkpoint, base_name: str) -> None:
    """Every delta must name a tensor of the corpus's base, with the same shape."""
    for name, info in sorted(tv.tensors.items()):
        theirs = base.tensors.get(name)
        if theirs is None or theirs.shape != info.shape:
            found = f"shape {list(theirs.shape)}" if theirs else "no such tensor"
            raise Conflict(
                f"task vector tensor {name!r} has shape {list(info.shape)} but base model {base_name!r} has "
                f"{found}: it was not computed against this corpus's base"
            )


def add_task_vector(
    ws: Workspace,
    corpus: str,
    directory: Path,
    *,
    method: str,
    storage_dtype: str,
    training: dict[str, Any] | None = None,
    norms: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    reflection_set_id: int | None = None,
    start_merge_id: int | None = None,
) -> TaskVectorRecord:
    """Store a directory of delta safetensors as the corpus's next task vector version (``start_merge_id``:
    the merge whose model its training started from)."""
    with ws.db.read() as session:
        base = row_of(session, BaseModelRow, find_corpus(session, corpus).base_model_id)
    try:
        tv = open_checkpoint(directory)
        base_ckpt = open_checkpoint(ws.materialize(base.manifest_sha256, "models", what=f"base model {base.name!r}"))
    except CheckpointError as e:
        raise Corrupt(str(e)) from e
    _check_against_base(tv, base_ckpt, base.name)
    manifest = store_directory(ws.store, directory, kind="task_vector")
    ws.keep(directory, manifest, "task_vectors", move=False)
    with ws.db.write() as session:
        corpus_row = find_corpus(session, corpus)
        require_stored(session, ws.store, manifests=[manifest], what=f"the task vector of corpus {corpus!r}")
        row = TaskVectorRow(
            corpus_id=corpus_row.id,
            version=next_version(session, corpus_row),
            base_model_id=corpus_row.base_model_id,
            reflection_set_id=reflection_set_id,
            start_merge_id=start_merge_id,
            method=method,
            training=training or {},
            storage_dtype=storage_dtype,
            manifest_sha256=manifest,
            norms=norms or {},
            metrics=metrics or {},
        )
        session.add(row)
        session.flush()
        return _to_record(session, row)


def list_task_vectors(db: Database, corpus: str) -> list[TaskVectorRecord]:
    with db.read() as session:
        corpus_row = find_corpus(session, corpus)
        rows = session.scalars(
            select(TaskVectorRow).where(TaskVectorRow.corpus_id == corpus_row.id).order_by(TaskVectorRow.version)
        ).all()
        return [_to_record(session, r) for r in rows]
