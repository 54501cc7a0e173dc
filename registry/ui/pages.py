"""What each page shows, gathered from the registry's records (the same ones the CLI's ``--json`` gives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from registry import BlobStoreFailed, ChannelRecord, MergeRecord, PublicationRecord, Registry, figures
from registry.ui import svg

HUB = "https://huggingface.co"
HEATMAP_MERGES = 60  # the most recent merges the heatmap shows by default


def hub_url(publication: PublicationRecord) -> str:
    return f"{(publication.endpoint or HUB).rstrip('/')}/{publication.repo_id}"


def _latest_by_channel(publications: list[PublicationRecord]) -> dict[str, PublicationRecord]:
    latest: dict[str, PublicationRecord] = {}
    for p in publications:  # oldest first: the last one wins
        if p.channel is not None:
            latest[p.channel] = p
    return latest


def home(reg: Registry) -> dict[str, Any]:
    listed = reg.list_channels()
    merges = {m.id: m for m in reg.list_merges(ids=[c.current_merge_id for c in listed if c.current_merge_id])}
    corpora = reg.list_corpora()
    latest = _latest_by_channel(reg.publications())
    channels = [
        {
            "channel": c,
            "merge": merges.get(c.current_merge_id) if c.current_merge_id is not None else None,
            "publication": latest.get(c.name),
        }
        for c in listed
    ]
    counts = {
        "bases": len(reg.list_bases()),
        "corpora": len(corpora),
        "task vectors": sum(c.task_vector_count for c in corpora),
        "merges": reg.count_merges(),
    }
    shown = [
        figures.count(counts["bases"], "base"),
        figures.count(counts["corpora"], "corpus", "corpora"),
        figures.count(counts["task vectors"], "task vector"),
        figures.count(counts["merges"], "merge"),
    ]
    return {"channels": channels, "counts": counts, "shown": shown, "recent": reg.list_merges(last=10)[::-1]}


def channel(reg: Registry, name: str) -> dict[str, Any]:
    record = reg.get_channel(name)
    events = reg.log(name)
    merges = {m.id: m for m in reg.list_merges(ids={e.to_merge_id for e in events if e.to_merge_id})}
    rows = [{"event": e, "merge": merges.get(e.to_merge_id) if e.to_merge_id else None} for e in events]
    points = [
        (f"{e.action} -> merge-{e.to_merge_id}", merges[e.to_merge_id].lowest_retention)
        for e in events
        if e.to_merge_id in merges
    ]
    return {
        "channel": record,
        "rows": rows[::-1],
        "chart": svg.timeline(points, record.min_retention),
        "webhooks": reg.webhooks(name),
        "deliveries": reg.deliveries(name)[::-1],
    }


@dataclass(frozen=True)
class MergePage:
    merge: MergeRecord
    parent: MergeRecord | None
    children: list[MergeRecord]
    channels: list[ChannelRecord]
    publications: list[PublicationRecord]
    config: str
    settings: list[tuple[str, str]]  # the merge's parameters as named rows (registry.service.figures)
    cost: list[tuple[str, str]]
    retention_chart: Markup
    recall_chart: Markup
    lineage: Markup
    general: str = "n/a"  # general knowledge kept (registry.figures.general)


def merge(reg: Registry, ref: int) -> MergePage:
    record = reg.get_merge(ref)
    parent = reg.get_merge(record.parent_merge_id) if record.parent_merge_id is not None else None
    children = reg.list_merges(children_of=record.id)
    all_channels = reg.list_channels()
    here = [c for c in all_channels if c.current_merge_id == record.id]
    gates = [(c.name, c.min_retention) for c in all_channels if c.min_retention is not None]
    try:
        config = reg.merge_file(record.id, "mergekit_config.yml")
    except BlobStoreFailed:  # the bucket is away: the rows are still worth a page
        config = b"(the blob store cannot be reached: the merge's files are unavailable for now)"
    return MergePage(
        merge=record,
        parent=parent,
        children=children,
        channels=here,
        publications=reg.publications(record.id),
        config=config.decode(errors="replace") if config else "",
        settings=figures.settings_rows(record.parameters),
        cost=figures.merge_cost_rows(record),
        retention_chart=svg.bars(
            [svg.Bar(m.corpus, record.retention.get(m.corpus)) for m in record.members], gates, css_id="retention"
        ),
        recall_chart=svg.bars(
            [svg.Bar(m.corpus, r.exact_match if (r := record.recall.get(m.corpus)) else None) for m in record.members],
            css_id="recall",
        ),
        lineage=_lineage(record, parent, children, here),
        general=figures.general(record.general),
    )


def _lineage(
    record: MergeRecord, parent: MergeRecord | None, children: list[MergeRecord], channels: list[ChannelRecord]
) -> Markup:
    me = f"merge-{record.id}"
    nodes = [svg.Node(f"tv-{m.corpus}", f"{m.corpus}@v{m.version}", f"/corpora/{m.corpus}", 0) for m in record.members]
    edges = [(f"tv-{m.corpus}", me) for m in record.members]
    if parent is not None:
        nodes.append(svg.Node(f"merge-{parent.id}", f"merge-{parent.id} (parent)", f"/merges/{parent.id}", 1))
        edges.append((f"merge-{parent.id}", me))
    nodes.append(svg.Node(me, f"{me} ({record.strategy})", f"/merges/{record.id}", 1, current=True))
    for child in children:
        nodes.append(svg.Node(f"merge-{child.id}", f"merge-{child.id} ({child.strategy})", f"/merges/{child.id}", 1))
        edges.append((me, f"merge-{child.id}"))
    for c in channels:
        nodes.append(svg.Node(f"channel-{c.name}", c.name, f"/channels/{c.name}", 2))
        edges.append((me, f"channel-{c.name}"))
    return svg.lineage(nodes, edges)


def corpus(reg: Registry, name: str) -> dict[str, Any]:
    return {
        "corpus": reg.get_corpus(name),
        "reflection_sets": reg.list_reflection_sets(name),
        "task_vectors": reg.list_task_vectors(name)[::-1],
    }


def retention(reg: Registry, last: int = HEATMAP_MERGES) -> dict[str, Any]:
    merges = reg.list_merges(last=last) if last > 0 else []
    value = {(c, m.id): v for m in merges for c, v in m.retention.items()}
    value |= {(mm.corpus, m.id): m.retention.get(mm.corpus) for m in merges for mm in m.members}
    corpora = sorted({c for c, _ in value})
    return {
        "merges": merges,
        "corpora": corpora,
        "chart": svg.heatmap(corpora, [m.id for m in merges], value),
        "cells": [{"corpus": c, "merge": m, "retention": v} for (c, m), v in sorted(value.items())],
        "last": last,
    }
