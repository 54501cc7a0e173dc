"""Channels: named pointers to merges (``production``), moved by promotions and rollbacks.

History is append-only (database triggers): a rollback is a new event, never
a deletion. The merge a rollback returns to is found by replaying the
history as a stack: a promotion pushes, a rollback pops back to its target,
so rolling back twice goes two merges back rather than toggling.

A channel can require a minimum retention (``min_retention``) and a minimum
of its base's general knowledge kept (``min_general``): a promotion of a
merge that keeps less of any member corpus, or of the base's own knowledge,
is refused unless forced;
the refusal is an event in the history (``refused``, the channel does not
move) and a forced promotion is marked. Rollbacks are not gated: they
return to a merge the channel already served.

A channel linked to a Hub repo publishes before it moves: if publishing
fails, the channel stays where it was, so the Hub's ``main`` and the channel
never disagree because of memo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.operations.merges import channel_head, find_merge
from registry.store.database import Database
from registry.store.errors import Conflict, GateRefused, InvalidInput, NotFound
from registry.store.names import check_name
from registry.store.records import ChannelEventRecord, ChannelRecord
from registry.store.schema import ChannelEventRow, ChannelRow, MergeRow, utcnow

# publish(merge_id, channel) -> None, called before the channel moves (a linked Hub repo)
Publisher = Callable[[int, ChannelRecord], None]


def to_record(row: ChannelRow) -> ChannelRecord:
    return ChannelRecord(
        id=row.id,
        name=row.name,
        current_merge_id=row.current_merge_id,
        hub_repo=row.hub_repo,
        hub_endpoint=row.hub_endpoint,
        min_retention=row.min_retention,
        created_at=row.created_at,
        min_general=row.min_general,
    )


def find_channel(session: Session, name: str) -> ChannelRow:
    row = session.scalar(select(ChannelRow).where(ChannelRow.name == name))
    if row is None:
        raise NotFound(f"unknown channel {name!r}; see `memo channel list`")
    return row


def list_channels(db: Database) -> list[ChannelRecord]:
    with db.read() as session:
        return [to_record(r) for r in session.scalars(select(ChannelRow).order_by(ChannelRow.name))]


def get_channel(db: Database, name: str) -> ChannelRecord:
    with db.read() as session:
        return to_record(find_channel(session, name))


KEEP = object()  # "leave this setting as it is"


def lock_or_create(session: Session, name: str) -> ChannelRow:
    """The channel's row, locked for this transaction, created first if it does not exist.

    The row is created with ``INSERT ... ON CONFLICT DO NOTHING``: when several
    processes create the same channel at once, one inserts it and the others
    wait for it, then lock it; a plain ``SELECT ... FOR UPDATE`` finds no row
    to lock, and every process but one would fail on the unique name.
    """
    dialects: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    insert = dialects.get(session.get_bind().dialect.name)
    if insert is not None:
        session.execute(
            insert(ChannelRow).values(name=name, created_at=utcnow()).on_conflict_do_nothing(index_elements=["name"])
        )
    row = session.scalar(select(ChannelRow).where(ChannelRow.name == name).with_for_update())
    if row is None:  # another database: create it the ORM way (unique name still holds)
        row = ChannelRow(name=name)
        session.add(row)
        session.flush()
    return row


def configure(
    db: Database,
    name: str,
    *,
    hub_repo: str | None = None,
    hub_endpoint: str | None = None,
    unlink: bool = False,
    min_retention: Any = KEEP,  # a fraction, None (no gate), or KEEP
    min_general: Any = KEEP,  # likewise
) -> ChannelRecord:
    """Create the channel if needed; link it to a Hub repo (or unlink it); set or clear its gates."""
    check_name("channel", name)
    for option, value in (("--min-retention", min_retention), ("--min-general", min_general)):
        if value is not KEEP and value is not None:
            check_fraction(option, value)
    with db.write() as session:
        row = lock_or_create(session, name)
        changes = []
        if unlink:
            row.hub_repo = row.hub_endpoint = None
            changes.append("unlinked")
        elif hub_repo is not None:
            row.hub_repo, row.hub_endpoint = hub_repo, hub_endpoint
            changes.append(f"linked to {hub_repo} on {hub_endpoint}")
        if min_retention is not KEEP:
            row.min_retention = min_retention
            changes.append(f"min retention {min_retention:g}" if min_retention is not None else "no retention gate")
        if min_general is not KEEP:
            row.min_general = min_general
            changes.append(f"min general {min_general:g}" if min_general is not None else "no general-knowledge gate")
        session.flush()
        session.add(ChannelEventRow(channel_id=row.id, action="configure", reason="; ".join(changes)))
        return to_record(row)


def check_gate(session: Session, channel: str, merge: MergeRow) -> None:
    """Refuse a merge whose retention on any member corpus, or whose general knowledge kept, is below
    the channel's minimum; the refusal names every figure that fell short."""
    row = session.scalar(select(ChannelRow).where(ChannelRow.name == channel))
    if row is None:
        return
    short = [s for s in (_retention_short(merge, row.min_retention), _general_short(merge, row.min_general)) if s]
    if short:
        raise GateRefused(
            f"merge-{merge.id} was recorded but not promoted to {channel!r}: {'; '.join(short)}; merge with the "
            f"default strategy (it heals to the gate) or a higher --max-steps, or promote it anyway with "
            f"`memo promote {merge.id} --channel {channel} --force`"
        )


def _retention_short(merge: MergeRow, gate: float | None) -> str:
    if gate is None:
        return ""
    if not merge.retention:
        return f"no retention figures (made with --no-eval; merge again without it), the gate is {gate:g}"
    listed = below_gate(merge.retention, gate)
    return f"retention below {gate:g} on {listed}" if listed else ""


def below_gate(retention: dict[str, float | None], gate: float) -> str:
    """The corpora whose retention is below ``gate`` (or unknown), with their figures; "" when none."""
    low = {c: r for c, r in retention.items() if r is None or r < gate}
    return ", ".join(f"{c} {'?' if r is None else f'{r:.2f}'}" for c, r in sorted(low.items()))


def check_fraction(option: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise InvalidInput(f"{option} must be between 0 and 1, not {value}")


def _general_short(merge: MergeRow, gate: float | None) -> str:
    if gate is None:
        return ""
    kept = (merge.general or {}).get("kept")
    if kept is None:
        return (
            f"no general-knowledge figure (made with --no-eval, or its base has no probe set: `memo base probe`), "
            f"the gate is {gate:g}"
        )
    return f"general knowledge kept {kept:.2f}, below {gate:g}" if kept < gate else ""


def history_stack(session: Session, channel: ChannelRow) -> list[int]:
    """The merges the channel went through, minus those rolled back, oldest first."""
    stack: list[int] = []
    events = session.scalars(
        select(ChannelEventRow).where(ChannelEventRow.channel_id == channel.id).order_by(ChannelEventRow.id)
    )
    for e in events:
        if e.to_merge_id is None:
            continue
        if e.action == "promote":
            stack.append(e.to_merge_id)
        elif e.action == "rollback":
            if e.to_merge_id in stack:
                del stack[len(stack) - stack[::-1].index(e.to_merge_id) :]
            else:
                stack.append(e.to_merge_id)
    return stack


def _move(
    db: Database,
    channel: str,
    target: int,
    action: str,
    reason: str,
    forced: bool,
    publish: Publisher | None,
    expected: int | None,
) -> ChannelEventRecord:
    """Publish (when linked), then move the channel (created on first use) if nobody moved it meanwhile."""
    check_name("channel", channel)
    with db.read() as session:
        row = session.scalar(select(ChannelRow).where(ChannelRow.name == channel))
        snapshot = to_record(row) if row is not None else None
    if snapshot is not None and snapshot.hub_repo and publish is not None:
        publish(target, snapshot)
    with db.write() as session:
        row = lock_or_create(session, channel)
        if row.current_merge_id != expected:
            raise Conflict(
                f"channel {channel!r} moved to merge {row.current_merge_id} meanwhile; look at `memo log` and try again"
            )
        event = ChannelEventRow(
            channel_id=row.id,
            action=action,
            from_merge_id=row.current_merge_id,
            to_merge_id=target,
            reason=reason,
            forced=forced,
        )
        row.current_merge_id = target
        session.add(event)
        session.flush()
        return ChannelEventRecord(
            id=event.id,
            channel=channel,
            action=action,
            from_merge_id=event.from_merge_id,
            to_merge_id=target,
            reason=reason,
            forced=forced,
            created_at=event.created_at,
        )


def promote(
    db: Database,
    merge_ref: str | int,
    channel: str,
    *,
    reason: str = "",
    forced: bool = False,
    publish: Publisher | None = None,
    expected: Any = KEEP,
) -> ChannelEventRecord | None:
    """Point ``channel`` at a merge (created on first use). None when it already points there.

    ``expected``: the merge the channel must still point at (what a merge built for the channel
    started from); if another user moved it meanwhile, a :class:`Conflict` and nothing moves.
    """
    with db.read() as session:
        merge = find_merge(session, merge_ref)
        target = merge.id
        current = channel_head(session, channel)
        refusal = None
        if current != target and not forced:
            try:
                check_gate(session, channel, merge)
            except GateRefused as e:
                refusal = e
    if refusal is not None:
        _record_refusal(db, channel, current, target, str(refusal))
        raise refusal
    if current == target:
        return None
    if expected is not KEEP and current != expected:
        raise Conflict(
            f"merge-{target} was recorded but not promoted: channel {channel!r} moved from merge {expected} "
            f"to {current} while it was made; look at `memo log {channel}`, then `memo promote {target} "
            f"--channel {channel}` if it should still go out"
        )
    return _move(db, channel, target, "promote", reason, forced, publish, current)


def _record_refusal(db: Database, channel: str, current: int | None, target: int, reason: str) -> None:
    """The gate's refusal goes into the channel's history; the channel itself does not move."""
    with db.write() as session:
        row = find_channel(session, channel)
        session.add(
            ChannelEventRow(
                channel_id=row.id, action="refused", from_merge_id=current, to_merge_id=target, reason=reason
            )
        )


def rollback(
    db: Database, channel: str, *, to: str | int | None = None, reason: str = "", publish: Publisher | None = None
) -> ChannelEventRecord:
    """Point ``channel`` back at the merge before its current one (or at ``to``)."""
    with db.read() as session:
        row = find_channel(session, channel)
        current = row.current_merge_id
        if to is not None:
            target = find_merge(session, to).id
            if target == current:
                raise InvalidInput(f"channel {channel!r} already points at merge {target}")
        else:
            stack = history_stack(session, row)
            if len(stack) < 2:
                raise InvalidInput(f"channel {channel!r} has no earlier merge to roll back to")
            target = stack[-2]
    return _move(db, channel, target, "rollback", reason, False, publish, current)
