"""Rehearsal: training a corpus onto a model that already holds earlier corpora.

Sequential training (each corpus fine-tuned from the model that holds the earlier ones, as MagMax
trains each task from the previous) forgets the earlier corpora unless they are rehearsed. Every
earlier pair is kept (a fixed-size sample of them was measured to relearn only what it sampled) and
the new corpus's pairs are repeated until the earlier ones make up ``share`` of the examples, so the
batches the loop draws hold them in that proportion whatever K is: the step count, and so the cost of
an arrival, does not grow with the number of corpora already held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from training.chat import QAPair
from training.settings import check_rehearse_share


@dataclass(frozen=True)
class Rehearsal:
    """The examples to train on, and how they were made up (for the task vector's provenance)."""

    pairs: list[QAPair]
    share: float
    earlier: int  # earlier corpora's pairs, each once
    repeats: int  # times the new corpus's pairs appear

    def to_json(self) -> dict:
        return {"share": self.share, "earlier": self.earlier, "repeats": self.repeats}


def rehearsed(new: Sequence[QAPair], earlier: Sequence[QAPair], share: float) -> Rehearsal:
    """``new`` repeated so that ``earlier`` (each pair once) is about ``share`` of the examples."""
    check_rehearse_share(share)
    if not new:
        raise ValueError("no pairs to train on")
    repeats = max(1, round(len(earlier) * (1 - share) / (share * len(new)))) if earlier else 1
    return Rehearsal([*new] * repeats + [*earlier], share, len(earlier), repeats)
