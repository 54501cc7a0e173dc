"""What is mixed into a training besides the corpora's own pairs: the base's replay set (its own
answers to everyday prompts, keeping its general knowledge) and near misses of each corpus's questions
(look-alike names answered "I don't know", teaching the boundary of what the memory holds). Used by a
corpus's fine-tuning and by the trained integration strategies alike, in the shares their settings give."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from registry.operations.replay import replay_set
from registry.store.schema import BaseModelRow, DocumentRow
from registry.store.workspace import Workspace
from training.boundary import near_misses
from training.chat import QAPair
from training.documents import document_text
from training.settings import Shares
from training.sft import Mixed, mixed_in, rounds_for, share_count


def corpus_text(ws: Workspace, corpus_id: int) -> str:
    with ws.db.read() as session:
        docs = session.scalars(select(DocumentRow).where(DocumentRow.corpus_id == corpus_id)).all()
    return "\n".join(document_text(d.media_type, ws.store.get_bytes(d.sha256)) for d in docs)


def mixed_in_pairs(
    ws: Workspace,
    base: BaseModelRow,
    corpora: Sequence[tuple[int, Sequence[QAPair]]],
    shares: Shares,
    *,
    device: str,
    seen: int | None = None,
) -> Mixed:
    """The replay and boundary pairs to train on beside every corpus's pairs (``(corpus id, pairs)``),
    in the shares given (none when both are 0); a training that will see ``seen`` examples lists the
    corpora's pairs several times beside as many distinct replay pairs (:func:`training.sft.rounds_for`).
    The replay set drawn from is named by its blob's sha256 (``replay_source``)."""
    drawn = replay_set(ws, base, device=device) if shares.replay else None
    replay = drawn.pairs if drawn else []
    own = sum(len(pairs) for _, pairs in corpora)
    rounds = rounds_for(own, len(replay), seen, shares)
    boundary: list[QAPair] = []
    if shares.boundary:
        for corpus_id, corpus_pairs in corpora:
            count = share_count(len(corpus_pairs), shares.boundary, shares) * rounds
            boundary += near_misses(corpus_pairs, corpus_text(ws, corpus_id), count, seed=shares.seed)
    source = drawn.sha256 if drawn else None
    return Mixed(rounds, mixed_in(own, replay, boundary, shares, rounds=rounds), replay_source=source)
