"""Retention: how much of each member corpus a merged model still recalls.

A merge is asked the same questions its members' own models were scored on
after training: the member task vector's reflection set, in the same seeded
sample (``EVAL_SAMPLE`` questions at the training seed). Retention is the
merged recall divided by the own model's, so 1.0 means nothing was lost.
Measured before the merge row is written (merge rows are immutable), with
the merged model loaded once for all members.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database, row_of
from registry.store.home import cache_dir
from registry.store.materialize import materialize
from registry.store.schema import ReflectionSetRow, TaskVectorRow
from registry.training_ops import EVAL_SAMPLE, sample
from training.qa_files import decode_records, pairs_of


@dataclass(frozen=True)
class Retention:
    recall: dict[str, dict]  # corpus -> {"exact_match", "f1", "count", "own"}
    retention: dict[str, float | None]  # corpus -> merged / own (None: no own figure to compare with)

    @property
    def lowest(self) -> float | None:
        values = [v for v in self.retention.values() if v is not None]
        return min(values) if values else None


def measure(
    db: Database,
    store: LocalBlobStore,
    home: Path,
    manifest_sha256: str,
    members: list[tuple[str, TaskVectorRow]],
    *,
    device: str,
) -> Retention:
    from training.evaluate import recall
    from training.sft import load_model

    model, tokenizer = load_model(
        materialize(store, manifest_sha256, cache_dir(home, "models"), what="the merged model"), device
    )
    recalls: dict[str, dict] = {}
    retention: dict[str, float | None] = {}
    for corpus, tv in members:
        questions = _questions(db, store, tv)
        if not questions:
            continue
        result = recall(model, tokenizer, questions, device=device).to_json()
        own = tv.metrics.get("recall", {}).get("exact_match")
        recalls[corpus] = {**result, "own": own}
        retention[corpus] = result["exact_match"] / own if own else None
    return Retention(recalls, retention)


def _questions(db: Database, store: LocalBlobStore, tv: TaskVectorRow) -> list:
    return reflections_of(db, store, tv)[1]


def reflections_of(db: Database, store: LocalBlobStore, tv: TaskVectorRow) -> tuple[list, list]:
    """(every pair the task vector was trained on, the seeded sample its own model was scored on)."""
    if tv.reflection_set_id is None:  # a task vector added from weights: no questions to ask
        return [], []
    with db.read() as session:
        sha = row_of(session, ReflectionSetRow, tv.reflection_set_id).sha256
    seed = tv.training.get("sft", {}).get("seed", 0)
    pairs = pairs_of(decode_records(store.get_bytes(sha)))
    return pairs, sample(pairs, EVAL_SAMPLE, seed)
