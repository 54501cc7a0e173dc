"""Training a corpus onto a channel's model (``memo register/train --onto CHANNEL``).

The corpus is fine-tuned from the model the channel serves, not from the base, on its own pairs with
every earlier member corpus's reflections rehearsed (:mod:`training.rehearsal`). Its task vector is
still the trained weights minus the base's, so it merges like any other; it holds the earlier members
too, and the ``sequential`` strategy serves it alone (base + its deltas) as the merge of those members
and it (:func:`registry.operations.integration.carrier_of`). An arrival then costs one training of
the corpus's size, whatever the number of corpora already held. A channel with no model yet (or no
such channel) means the base: the first corpus is trained as it would be without ``--onto``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from registry.operations.merges import channel_head, member_task_vectors
from registry.operations.questions import reflections_of
from registry.store.database import row_of
from registry.store.errors import Conflict, InvalidInput
from registry.store.schema import CorpusRow, MergeRow
from registry.store.workspace import Workspace
from training.chat import QAPair
from training.settings import REHEARSE_SHARE, check_rehearse_share


@dataclass(frozen=True)
class Onto:
    """Train onto the model of ``channel``, earlier members making up ``share`` of the examples."""

    channel: str
    share: float = REHEARSE_SHARE

    def check(self) -> None:
        try:
            check_rehearse_share(self.share)
        except ValueError as e:
            raise InvalidInput(f"--rehearse: {e}") from None


def onto_of(channel: str | None, share: float) -> Onto | None:
    """``--onto CHANNEL --rehearse SHARE`` checked (None: no channel, train from the base)."""
    if channel is None:
        return None
    onto = Onto(channel, share)
    onto.check()
    return onto


def start_of(session: Session, onto: Onto | None, base_id: int, corpus: str) -> MergeRow | None:
    """The merge corpus ``corpus`` (of base ``base_id``) is trained from: the channel's current one
    (None: the base)."""
    if onto is None:
        return None
    head = channel_head(session, onto.channel)
    if head is None:
        return None
    start = row_of(session, MergeRow, head)
    if start.base_model_id != base_id:
        raise Conflict(
            f"channel {onto.channel!r} serves merge-{start.id}, on another base model than corpus {corpus!r}'s; "
            "a corpus is trained onto a model of its own base"
        )
    return start


def earlier_pairs(ws: Workspace, start: MergeRow, corpus: CorpusRow) -> list[QAPair]:
    """Every reflection of the start's member corpora but this one (a new version supersedes its old pairs)."""
    with ws.db.read() as session:
        rows = [tv for tv in member_task_vectors(session, start.id) if tv.corpus_id != corpus.id]
    return [p for tv in rows for p in reflections_of(ws, tv)[0]]
