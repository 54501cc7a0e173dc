"""How a figure reads, the same on every surface: the CLI's tables, ``memo ui`` and the demo.

Fractions (recall, retention) with two decimals, seconds with one and a unit, counts with their noun
in the right number, settings flattened into named rows with at most four significant digits. The
JSON outputs keep the raw values; these are for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module before any command runs: no SQL here
    from registry.store.records import ChannelRecord, GeneralKnowledge, MergeRecord


def fraction(value: float | None) -> str:
    """A recall or a retention: ``0.93``; ``n/a`` where there is none."""
    return "n/a" if value is None else f"{value:.2f}"


def general(value: GeneralKnowledge | None) -> str:
    """General knowledge kept: ``0.93 (140 of 150)``; ``n/a`` where it was not measured."""
    return "n/a" if value is None else f"{value.kept:.2f} ({value.correct} of {value.count})"


def gates(channel: ChannelRecord) -> str:
    """A channel's gates: ``min retention 0.8, min general 0.85``; ``none``."""
    shown = [
        (w, v) for w, v in (("retention", channel.min_retention), ("general", channel.min_general)) if v is not None
    ]
    return ", ".join(f"min {what} {value:g}" for what, value in shown) or "none"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 base``, ``3 bases``, ``1 task vector``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def setting(value: Any) -> str:
    """One setting as text: floats to four significant digits, lists comma-separated, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(setting(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def settings_rows(parameters: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as ``(name, text)`` rows: ``{"retain": {"target": 0.9}}`` gives ``retain.target``."""
    rows: list[tuple[str, str]] = []
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += settings_rows(value, name + ".")
        else:
            rows.append((name, setting(value)))
    return rows


def merge_cost_rows(record: MergeRecord) -> list[tuple[str, str]]:
    """What making a merge took, named as ``memo merge`` prints it."""
    cost = record.training_cost
    rows = [("merge engine", seconds(cost.merge_seconds)), ("kernel", cost.kernel or "not recorded")]
    if cost.evaluation_seconds:
        rows.append(("recall checks", seconds(cost.evaluation_seconds)))
    if record.strategy != "ties":
        rows += [("training", seconds(cost.train_seconds)), ("retention checks", seconds(cost.check_seconds))]
        rows += [("steps", str(cost.steps)), ("examples", str(cost.examples))]
        if cost.retain is not None:
            rows.append(("target reached", "yes" if cost.retain.reached else "no (step cap)"))
    return rows
