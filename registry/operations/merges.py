"""Merges: task vectors of one base composed into one model, recorded immutably and found by content.

A merge is computed once: its content key is the sha256 of everything that
decides its tensors (the base, the method and its parameters, each member
task vector and its weight), so asking again for the same merge returns the
recorded one. Members are put in corpus-name order, so ``merge a b`` and
``merge b a`` are one merge. The output is stored in the blob store before
the row is written, in one transaction with its members: a crash leaves no
row and only unreferenced blobs (which `memo gc` removes).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from merging.card import engine_version
from registry.operations import integration
from registry.operations.devices import device_for
from registry.operations.merge_inputs import Member, MergeParams, resolve_members
from registry.operations.merged_models import compute_merge
from registry.operations.retention import measure
from registry.operations.strategies import AUTO, strategy_of
from registry.store.database import Database, row_of
from registry.store.errors import InvalidInput, NotFound
from registry.store.leases import require_stored
from registry.store.manifests import load_manifest, manifest_files
from registry.store.names import row_number
from registry.store.records import MemberRecall, MergeCost, MergeMemberRecord, MergeRecord
from registry.store.schema import BaseModelRow, ChannelRow, CorpusRow, MergeMemberRow, MergeRow, TaskVectorRow
from registry.store.workspace import Workspace
from training.retain import RetainSettings

_MERGE_REF = re.compile(r"(merge-)?(?P<id>\d+)")


def content_key(
    base: BaseModelRow,
    params: MergeParams,
    members: list[Member],
    strategy: str = "ties",
    retain: RetainSettings | None = None,
    start: MergeRow | None = None,
) -> str:
    described = {
        "base": base.fingerprint,
        "strategy": strategy,
        "method": params.method,
        "lambda": params.lam,
        "density": params.density if params.method_def.trims else None,
        **params.method_parameters(),
        "members": [[m.row.id, m.row.manifest_sha256, m.weight] for m in members],
    }
    if strategy_of(strategy).trained:  # the settings (seed included) and the starting model decide it too
        described |= {
            "retain": retain.to_json() if retain else None,
            "start": start.manifest_sha256 if start is not None else None,
        }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


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


def _retention(ws: Workspace, manifest: str, members: list[Member], device: str):
    return measure(ws, manifest, [(m.corpus, m.row) for m in members], device=device_for(device))


def create_merge(
    ws: Workspace,
    refs: list[str],
    params: MergeParams,
    *,
    channel: str | None = None,
    progress: bool = True,
    evaluate: bool = True,
    device: str = "auto",
    strategy: str = "ties",
    retain: RetainSettings | None = None,
) -> MergeRecord:
    """Merge the corpora's task vectors (or find the recorded merge of the same content).

    ``channel`` names the parent (the channel's current merge; ``warm``
    starts from it); moving the channel is a separate promotion. ``strategy``
    is one of :data:`registry.operations.strategies.CHOICES` (``auto`` is resolved
    here to ``warm`` or ``ties+heal``); the trained ones use
    ``retain``. With ``evaluate`` the result is asked each member corpus's
    questions, and the recall and retention (merged / own) go on the row
    (:mod:`registry.operations.retention`).
    """
    params.check()
    integration.check_strategy(strategy, retain)
    with ws.db.read() as session:
        base, members = resolve_members(session, refs, params)
        head = channel_head(session, channel)
        if strategy == AUTO:
            strategy = integration.resolve_auto(session, base, members, head)
        start = None
        if strategy_of(strategy).trained:
            retain = integration.settle(retain, members)
            if strategy_of(strategy).start == "channel":
                start = integration.warm_start(session, base, head, channel)
        key = content_key(base, params, members, strategy, retain, start)
        existing = session.scalar(select(MergeRow).where(MergeRow.content_key == key))
        if existing is not None:
            return to_record(session, existing, reused=True)
    started = time.perf_counter()
    if not strategy_of(strategy).trained:
        manifest, kernel = compute_merge(ws, base, members, params, progress=progress)
        cost, outcome = {"merge_seconds": time.perf_counter() - started, "kernel": kernel}, {}
    else:
        assert retain is not None  # settled above for every trained strategy
        trained = integration.train_strategy(
            ws, strategy, base, members, params, retain, start, device=device, progress=progress
        )
        manifest, cost, outcome = trained.manifest_sha256, trained.cost, {"retain": trained.retain}
    measured_at = time.perf_counter()
    measured = _retention(ws, manifest, members, device) if evaluate else None
    cost["evaluation_seconds"] = time.perf_counter() - measured_at
    return _record(ws, key, base, members, params, strategy, retain, start, channel, manifest, measured, cost | outcome)


def _parameters(
    params: MergeParams, members: list[Member], strategy: str, retain: RetainSettings | None, start: MergeRow | None
) -> dict:
    merged = {
        "density": params.density if params.method_def.trims else None,
        "lambda": params.lam,
        "normalize": params.method_def.default_normalize,
        **params.method_parameters(),
        "weights": {m.corpus: m.weight for m in members},
    }
    chosen = strategy_of(strategy)
    if not chosen.trained or retain is None:
        return merged
    out = {
        "retain": retain.to_json(),
        "start": f"merge-{start.id}" if start is not None else ("ties" if chosen.merges else "base"),
    }
    return (merged | out) if chosen.merges else out


def _record(
    ws: Workspace,
    key: str,
    base: BaseModelRow,
    members: list[Member],
    params: MergeParams,
    strategy: str,
    retain: RetainSettings | None,
    start: MergeRow | None,
    channel: str | None,
    manifest: str,
    measured,
    cost: dict,
) -> MergeRecord:
    with ws.db.write() as session:
        existing = session.scalar(select(MergeRow).where(MergeRow.content_key == key))
        if existing is not None:  # another process recorded the same merge meanwhile
            return to_record(session, existing, reused=True)
        require_stored(session, ws.store, manifests=[manifest], what="the merge")
        row = MergeRow(
            base_model_id=base.id,
            strategy=strategy,
            method=params.method if strategy_of(strategy).merges else "fine-tune",
            parameters=_parameters(params, members, strategy, retain, start),
            engine_version=engine_version(),
            parent_merge_id=channel_head(session, channel),
            member_count=len(members),
            content_key=key,
            manifest_sha256=manifest,
            recall={c: r.to_json() for c, r in measured.recall.items()} if measured else {},
            retention=measured.retention if measured else {},
            training_cost=cost,
        )
        session.add(row)
        session.flush()
        for position, m in enumerate(members):
            session.add(MergeMemberRow(merge_id=row.id, task_vector_id=m.row.id, position=position, weight=m.weight))
        session.flush()
        return to_record(session, row)


def merge_file(ws: Workspace, ref: str | int, name: str) -> bytes | None:
    """One small file of a merge's model directory (e.g. ``mergekit_config.yml``), read from the blob store
    (verified); None when the merge has no such file."""
    with ws.db.read() as session:
        manifest = require_merge(session, str(ref)).manifest_sha256
    sha = manifest_files(load_manifest(ws.store, manifest)).get(name)
    return None if sha is None else ws.store.get_bytes(sha)
