"""The page's charts as inline SVG: drawn on the server, no JavaScript, every label escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


def _text(x: float, y: float, label: object, *, anchor: str = "start", size: int = 11, css: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" class="{css}">{escape(label)}</text>'
    )


def retention_color(value: float | None) -> str:
    """Red (forgot everything) through amber to green (kept everything); grey for no figure."""
    if value is None:
        return "#d9d9d9"
    v = max(0.0, min(1.0, value))
    if v >= 1:
        return "rgb(40,160,70)"
    red = int(215 - 150 * max(0.0, v - 0.5) * 2)  # stays red up to half, then fades
    green = int(48 + 152 * min(1.0, v * 2))  # grows up to half, then stays
    return f"rgb({red},{green},70)"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None  # 0..1 (a retention or a recall)
    note: str = ""


def bars(rows: Sequence[Bar], gates: Sequence[tuple[str, float]] = (), *, css_id: str = "bars") -> Markup:
    """Horizontal bars on a 0-1 scale (values above 1 are drawn at the edge), with dashed gate lines."""
    left, width, row_h = 150, 320, 22
    height = row_h * len(rows) + 30
    parts = [f'<svg id="{css_id}" class="chart" width="{left + width + 90}" height="{height}" role="img">']
    for i, row in enumerate(rows):
        y = 10 + i * row_h
        parts.append(_text(left - 8, y + 14, row.label, anchor="end"))
        if row.value is not None:
            w = width * max(0.0, min(1.0, row.value))
            parts.append(
                f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="14" fill="{retention_color(row.value)}"/>'
            )
        parts.append(_text(left + width + 6, y + 14, row.note or _fmt(row.value)))
    for name, gate in gates:
        x = left + width * max(0.0, min(1.0, gate))
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 18}" class="gate"/>')
        parts.append(_text(x, height - 4, f"{name} gate {gate:.2f}", anchor="middle", size=10, css="gate-label"))
    parts.append("</svg>")
    return Markup("".join(parts))


def axis_floor(values: Sequence[float]) -> float:
    """The bottom of a 0-1 axis that shows these values apart: a tenth below the lowest, rounded down to a
    tenth (retentions of 0.91-0.96 get 0.8-1.0, not a sliver at the top of 0-1)."""
    if not values:
        return 0.0
    return max(0.0, min(0.9, math.floor((min(values) - 0.05) * 10) / 10))


def timeline(points: Sequence[tuple[str, float | None]], gate: float | None, *, css_id: str = "timeline") -> Markup:
    """The lowest retention after each channel event, left to right; a dashed line at the gate."""
    width, height, pad = 560, 160, 30
    step = (width - 2 * pad) / max(1, len(points) - 1)
    parts = [f'<svg id="{css_id}" class="chart" width="{width}" height="{height}" role="img">']
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>')
    low = axis_floor([v for _, v in points if v is not None] + ([gate] if gate is not None else []))
    parts += [_text(4, height - pad + 4, f"{low:.1f}", size=10), _text(4, pad + 4, "1.0", size=10)]

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * max(0.0, min(1.0, (v - low) / (1.0 - low)))

    drawn = [(pad + i * step, y(v), label, v) for i, (label, v) in enumerate(points) if v is not None]
    if len(drawn) > 1:
        path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy, _, _ in drawn)
        parts.append(f'<polyline points="{path}" class="line"/>')
    for x, yy, label, v in drawn:
        parts.append(
            f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="4" fill="{retention_color(v)}"><title>{escape(label)}: '
            f"{v:.2f}</title></circle>"
        )
    if gate is not None:
        parts.append(f'<line x1="{pad}" y1="{y(gate):.1f}" x2="{width - pad}" y2="{y(gate):.1f}" class="gate"/>')
        parts.append(_text(width - pad, y(gate) - 4, f"gate {gate:.2f}", anchor="end", size=10, css="gate-label"))
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Node:
    key: str
    label: str
    href: str
    column: int  # 0: task vectors, 1: merges, 2: channels
    current: bool = False


def lineage(nodes: Sequence[Node], edges: Sequence[tuple[str, str]], *, css_id: str = "lineage") -> Markup:
    """Task vectors -> merges -> channels, one column each, edges as lines, each node a link."""
    col_x, box_w, box_h, gap = (10, 230, 450), 170, 24, 10
    rows: dict[int, int] = {}
    place: dict[str, tuple[float, float]] = {}
    for node in nodes:
        i = rows.get(node.column, 0)
        rows[node.column] = i + 1
        place[node.key] = (col_x[node.column], 10 + i * (box_h + gap))
    height = 20 + max(rows.values(), default=1) * (box_h + gap)
    parts = [f'<svg id="{css_id}" class="chart" width="{col_x[2] + box_w + 10}" height="{height}" role="img">']
    for a, b in edges:
        if a in place and b in place:
            (x1, y1), (x2, y2) = place[a], place[b]
            parts.append(
                f'<line x1="{x1 + box_w:.1f}" y1="{y1 + box_h / 2:.1f}" x2="{x2:.1f}" y2="{y2 + box_h / 2:.1f}" '
                'class="edge"/>'
            )
    for node in nodes:
        x, yy = place[node.key]
        css = "node current" if node.current else "node"
        parts.append(
            f'<a href="{escape(node.href)}"><rect x="{x}" y="{yy}" width="{box_w}" height="{box_h}" rx="4" '
            f'class="{css}"/>{_text(x + 8, yy + 16, _clip(node.label, 26))}</a>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def heatmap(
    corpora: Sequence[str],
    merges: Sequence[int],
    value: dict[tuple[str, int], float | None],
    *,
    css_id: str = "heatmap",
) -> Markup:
    """Corpus (rows) x merge (columns), each cell the merge's retention of that corpus; blank: not a member."""
    left, top, cell = 150, 40, 16
    width, height = left + cell * len(merges) + 10, top + cell * len(corpora) + 10
    parts = [f'<svg id="{css_id}" class="chart" width="{width}" height="{height}" role="img">']
    for j, merge_id in enumerate(merges):
        x = left + j * cell + cell / 2
        parts.append(f'<a href="/merges/{merge_id}">{_text(x, top - 6, merge_id, anchor="middle", size=9)}</a>')
    for i, corpus in enumerate(corpora):
        y = top + i * cell
        parts.append(_text(left - 6, y + cell - 4, _clip(corpus, 22), anchor="end", size=10))
        for j, merge_id in enumerate(merges):
            if (corpus, merge_id) not in value:
                continue
            v = value[(corpus, merge_id)]
            parts.append(
                f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                f'fill="{retention_color(v)}"><title>{escape(corpus)} in merge-{merge_id}: {_fmt(v)}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _clip(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"
