"""Making a merge: the members resolved, the strategy run (the merge engine, or training), the result
measured on every member corpus, and the row recorded with its members in one transaction.

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
import time

from sqlalchemy import select

from merging.card import engine_version
from registry.operations import integration
from registry.operations.devices import device_for
from registry.operations.merge_inputs import Member, MergeParams, resolve_members
from registry.operations.merged_models import compute_merge
from registry.operations.merges import channel_head, to_record
from registry.operations.probes import current_probe_set
from registry.operations.retention import measure
from registry.operations.strategies import AUTO, strategy_of
from registry.store.leases import require_stored
from registry.store.records import MergeRecord
from registry.store.schema import BaseModelRow, MergeMemberRow, MergeRow
from registry.store.workspace import Workspace
from training.retain import RetainSettings


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


def _retention(ws: Workspace, manifest: str, base: BaseModelRow, members: list[Member], device: str):
    with ws.db.read() as session:
        probe_set = current_probe_set(session, base.id)
    pairs = [(m.corpus, m.row) for m in members]
    return measure(ws, manifest, pairs, device=device_for(device), probe_set=probe_set)


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
        start, carrier = None, None
        if strategy_of(strategy).trained:
            retain = integration.settle(retain, members)
            if strategy_of(strategy).start == "channel":
                start = integration.warm_start(session, base, head, channel)
            elif strategy_of(strategy).start == "carrier":
                carrier, start = integration.sequential_start(session, members)
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
            ws, strategy, base, members, params, retain, start, device=device, progress=progress, carrier=carrier
        )
        manifest, cost, outcome = trained.manifest_sha256, trained.cost, {"retain": trained.retain}
    measured_at = time.perf_counter()
    measured = _retention(ws, manifest, base, members, device) if evaluate else None
    cost["evaluation_seconds"] = time.perf_counter() - measured_at
    method = params.method if strategy_of(strategy).merges else "fine-tune"
    parameters = _parameters(params, members, strategy, retain, start, carrier)
    return _record(ws, key, base, members, (strategy, method, parameters), channel, manifest, measured, cost | outcome)


def _parameters(
    params: MergeParams,
    members: list[Member],
    strategy: str,
    retain: RetainSettings | None,
    start: MergeRow | None,
    carrier: Member | None,
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
    out: dict[str, object] = {
        "retain": retain.to_json(),
        "start": f"merge-{start.id}" if start is not None else ("ties" if chosen.merges else "base"),
    }
    if chosen.start == "carrier":  # the start is the carrier's model; ``start`` the merge it was trained onto
        assert carrier is not None  # found with the start
        out["start"] = f"{carrier.corpus}@v{carrier.row.version}"
        out["trained_onto"] = f"merge-{start.id}" if start is not None else None
    return (merged | out) if chosen.merges else out


def _record(
    ws: Workspace,
    key: str,
    base: BaseModelRow,
    members: list[Member],
    made: tuple[str, str, dict],  # strategy, method, parameters
    channel: str | None,
    manifest: str,
    measured,
    cost: dict,
) -> MergeRecord:
    strategy, method, parameters = made
    with ws.db.write() as session:
        existing = session.scalar(select(MergeRow).where(MergeRow.content_key == key))
        if existing is not None:  # another process recorded the same merge meanwhile
            return to_record(session, existing, reused=True)
        require_stored(session, ws.store, manifests=[manifest], what="the merge")
        row = MergeRow(
            base_model_id=base.id,
            strategy=strategy,
            method=method,
            parameters=parameters,
            engine_version=engine_version(),
            parent_merge_id=channel_head(session, channel),
            member_count=len(members),
            content_key=key,
            manifest_sha256=manifest,
            recall={c: r.to_json() for c, r in measured.recall.items()} if measured else {},
            retention=measured.retention if measured else {},
            general=measured.general if measured else None,
            training_cost=cost,
        )
        session.add(row)
        session.flush()
        for position, m in enumerate(members):
            session.add(MergeMemberRow(merge_id=row.id, task_vector_id=m.row.id, position=position, weight=m.weight))
        session.flush()
        return to_record(session, row)
