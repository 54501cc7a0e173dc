"""Merges as recorded: found by id or channel, listed, shown. Making one is
:mod:`registry.operations.merge_making`; this module imports neither torch nor the merge engine, so
listings stay light."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.store.database import Database, row_of
from registry.store.errors import InvalidInput, NotFound
from registry.store.manifests import load_manifest, manifest_files
from registry.store.names import row_number
from registry.store.records import GeneralKnowledge, MemberRecall, MergeCost, MergeMemberRecord, MergeRecord
from registry.store.schema import BaseModelRow, ChannelRow, CorpusRow, MergeMemberRow, MergeRow, TaskVectorRow
from registry.store.workspace import Workspace

_MERGE_REF = re.compile(r"(merge-)?(?P<id>\d+)")


_MemberRows = list[tuple[str, int, int, float]]  # corpus, version, task vector id, weight


def _member_rows(session: Session, merge_ids: list[int] | None) -> dict[int, _MemberRows]:
    """Each merge's members in order, in one query of plain columns (``None``: every merge's)."""
    query = (
        select(MergeMemberRow.merge_id, CorpusRow.name, TaskVectorRow.version, TaskVectorRow.id, MergeMemberRow.weight)
        .join(TaskVectorRow, TaskVectorRow.id == MergeMemberRow.task_vector_id)
        .join(CorpusRow, CorpusRow.id == TaskVectorRow.corpus_id)
        .order_by(MergeMemberRow.merge_id, MergeMemberRow.position)
    )
    if merge_ids is not None:
        query = query.where(MergeMemberRow.merge_id.in_(merge_ids))
    found: dict[int, _MemberRows] = {}
    for merge_id, *member in session.execute(query).all():
        found.setdefault(merge_id, []).append(tuple(member))  # type: ignore[arg-type]
    return found


def to_record(
    session: Session,
    row: MergeRow,
    *,
    reused: bool = False,
    members: _MemberRows | None = None,
    base_name: str | None = None,
) -> MergeRecord:
    if members is None:
        members = _member_rows(session, [row.id]).get(row.id, [])
    density = row.parameters.get("density")
    return MergeRecord(
        id=row.id,
        base_model=base_name or row_of(session, BaseModelRow, row.base_model_id).name,
        strategy=row.strategy,
        method=row.method,
        parameters=row.parameters,
        engine_version=row.engine_version,
        parent_merge_id=row.parent_merge_id,
        content_key=row.content_key,
        manifest_sha256=row.manifest_sha256,
        members=tuple(
            MergeMemberRecord(
                corpus=corpus,
                version=version,
                task_vector_id=tv_id,
                weight=weight,
                density=density if density is not None else 1.0,
            )
            for corpus, version, tv_id, weight in members
        ),
        recall={corpus: MemberRecall.of_member(r) for corpus, r in row.recall.items()},
        retention=dict(row.retention),
        training_cost=MergeCost.from_json(row.training_cost),
        created_at=row.created_at,
        reused=reused,
        general=GeneralKnowledge.from_json(row.general),
    )


def find_merge(session: Session, ref: str | int) -> MergeRow:
    """A merge by id (``7`` or ``merge-7``)."""
    match = _MERGE_REF.fullmatch(str(ref))
    if not match:
        raise InvalidInput(f"{ref!r} is not a merge id (e.g. 7 or merge-7); see `memo merge list`")
    merge_id = row_number(match["id"], "merge id")
    row = session.get(MergeRow, merge_id) if merge_id is not None else None
    if row is None:
        raise NotFound(f"unknown merge {ref!r}; see `memo merge list`")
    return row


def is_merge_ref(ref: str) -> bool:
    return bool(_MERGE_REF.fullmatch(ref))


def merge_of(session: Session, ref: str) -> MergeRow | None:
    """The merge a reference names: a merge id, or a channel (its current merge). None: neither."""
    if is_merge_ref(ref):
        return find_merge(session, ref)
    channel = session.scalar(select(ChannelRow).where(ChannelRow.name == ref))
    if channel is None:
        return None
    if channel.current_merge_id is None:
        raise NotFound(f"channel {ref!r} points at no merge yet; run `memo promote MERGE --channel {ref}`")
    return row_of(session, MergeRow, channel.current_merge_id)


def require_merge(session: Session, ref: str) -> MergeRow:
    row = merge_of(session, ref)
    if row is None:
        raise NotFound(
            f"{ref!r} is neither a merge id (7, merge-7) nor a channel; see `memo merge list` and `memo channel list`"
        )
    return row


def list_merges(
    db: Database, *, ids: Iterable[int] | None = None, last: int | None = None, children_of: int | None = None
) -> list[MergeRecord]:
    """Merges oldest first: every one, or those with ``ids``, the ``last`` few, or the ``children_of`` a merge
    (three queries however many there are)."""
    query = select(MergeRow).order_by(MergeRow.id)
    if ids is not None:
        query = query.where(MergeRow.id.in_(list(ids)))
    if children_of is not None:
        query = query.where(MergeRow.parent_merge_id == children_of)
    if last is not None:
        query = query.order_by(None).order_by(MergeRow.id.desc()).limit(last)
    with db.read() as session:
        bases = {i: name for i, name in session.execute(select(BaseModelRow.id, BaseModelRow.name))}
        rows = sorted(session.scalars(query), key=lambda r: r.id)
        members = _member_rows(
            session, None if ids is None and last is None and children_of is None else [r.id for r in rows]
        )
        return [
            to_record(session, row, members=members.get(row.id, []), base_name=bases[row.base_model_id]) for row in rows
        ]


def count_merges(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(MergeRow)) or 0


def get_merge(db: Database, ref: str | int) -> MergeRecord:
    """A merge by id (``7``, ``merge-7``) or a channel's current merge."""
    with db.read() as session:
        return to_record(session, require_merge(session, str(ref)))


def channel_head(session: Session, channel: str | None) -> int | None:
    if channel is None:
        return None
    row = session.scalar(select(ChannelRow).where(ChannelRow.name == channel))
    return row.current_merge_id if row else None


def merge_file(ws: Workspace, ref: str | int, name: str) -> bytes | None:
    """One small file of a merge's model directory (e.g. ``mergekit_config.yml``), read from the blob store
    (verified); None when the merge has no such file."""
    with ws.db.read() as session:
        manifest = require_merge(session, str(ref)).manifest_sha256
    sha = manifest_files(load_manifest(ws.store, manifest)).get(name)
    return None if sha is None else ws.store.get_bytes(sha)


def member_task_vectors(session: Session, merge_id: int) -> list[TaskVectorRow]:
    """The task vectors a merge was made of, in member order."""
    return list(
        session.scalars(
            select(TaskVectorRow)
            .join(MergeMemberRow, MergeMemberRow.task_vector_id == TaskVectorRow.id)
            .where(MergeMemberRow.merge_id == merge_id)
            .order_by(MergeMemberRow.position)
        )
    )


def merged_model_dir(ws: Workspace, row: MergeRow, *, full: bool = False) -> Path:
    """A recorded merge as a loadable model directory (materialized from the blob store); ``full``: a
    cached copy is rehashed first (to publish or export it, or record a model made from it)."""
    return ws.materialize(row.manifest_sha256, "models", what=f"merge-{row.id}", full=full)
