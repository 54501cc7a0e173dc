"""The questions a model is scored on: a corpus's reflections (or held-out paraphrases), and the
seeded sample of them that a trained model, and every merge holding it, is asked."""

from __future__ import annotations

import random

from registry.operations.corpora import find_corpus
from registry.operations.reflections import HELDOUT_KEY, latest_reflections
from registry.store.database import row_of
from registry.store.errors import NotFound
from registry.store.schema import ReflectionSetRow, TaskVectorRow
from registry.store.workspace import Workspace
from training.chat import QAPair
from training.qa_files import decode_records, pairs_of

EVAL_SAMPLE = 200  # questions a trained model is scored on (a seeded sample for big corpora)


def sample(items: list, limit: int, seed: int) -> list:
    """At most ``limit`` items, the same ones for the same seed."""
    return items if len(items) <= limit else random.Random(seed).sample(items, limit)


def qa_pairs(ws: Workspace, corpus: str, *, heldout: bool = False) -> list[QAPair]:
    """A corpus's latest reflections (or their held-out paraphrases) as question-answer pairs."""
    with ws.db.read() as session:
        reflections = latest_reflections(session, find_corpus(session, corpus))
    sha = reflections.settings.get(HELDOUT_KEY) if heldout else reflections.sha256
    if sha is None:
        raise NotFound(
            f"corpus {corpus!r} has no held-out set; import one with `memo reflect {corpus} --qa FILE --heldout FILE`"
        )
    return pairs_of(decode_records(ws.store.get_bytes(sha)))


def reflections_of(ws: Workspace, tv: TaskVectorRow) -> tuple[list[QAPair], list[QAPair]]:
    """(every pair the task vector was trained on, the seeded sample its own model was scored on)."""
    if tv.reflection_set_id is None:  # a task vector added from weights: no questions to ask
        return [], []
    with ws.db.read() as session:
        sha = row_of(session, ReflectionSetRow, tv.reflection_set_id).sha256
    seed = tv.training.get("sft", {}).get("seed", 0)
    pairs = pairs_of(decode_records(ws.store.get_bytes(sha)))
    return pairs, sample(pairs, EVAL_SAMPLE, seed)
