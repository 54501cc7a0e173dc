"""The integration strategies as data: how member corpora become one model.

One row per strategy; :mod:`registry.operations.integration` runs them and
``memo merge --strategy`` offers them. To add a strategy, add its row here
and, if it starts from a new kind of model, that start in
:func:`registry.operations.integration.starting_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from registry.store.errors import InvalidInput

Start = Literal["merge", "channel", "base", "carrier"]


@dataclass(frozen=True)
class Strategy:
    name: str
    # the TIES merge of the members, the channel's current model, the base, or the model of the member
    # trained onto the merge of all the others (its carrier: registry.operations.integration.carrier_of)
    start: Start
    trained: bool  # fine-tuned on every member's reflections until each keeps the target retention
    label: str  # for tables and plots
    summary: str

    @property
    def merges(self) -> bool:
        """Whether the merge engine runs (its method and parameters are part of the result)."""
        return self.start == "merge"


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("ties", "merge", False, "bare TIES", "the bare TIES merge of the task vectors (no training)"),
        Strategy(
            "ties+heal",
            "merge",
            True,
            "TIES + heal",
            "the TIES merge, fine-tuned on all member reflections until every member keeps the target retention",
        ),
        Strategy(
            "warm", "channel", True, "warm start", "the channel's current model fine-tuned the same way; no merge"
        ),
        Strategy("retrain", "base", True, "retrain to target", "the base fine-tuned the same way, from scratch"),
        Strategy(
            "sequential",
            "carrier",
            True,
            "sequential",
            "the model of the member trained onto the merge of all the others (register --onto); "
            "fine-tuned the same way only if a member falls short",
        ),
    )
}
# sequential when a member was trained onto the merge of the others or is the only one, else warm when
# extending the channel's model, else ties+heal (integration.resolve_auto)
AUTO = "auto"
CHOICES = (AUTO, *STRATEGIES)
DEFAULT_STRATEGY = AUTO  # measured best (docs/continual-integration.md, "Why auto is the default")


def strategy_of(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidInput(f"unknown strategy {name!r}; use one of {', '.join(CHOICES)}") from None
