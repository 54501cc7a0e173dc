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

from registry.operations.probes import measure_general
from registry.operations.questions import reflections_of
from registry.store.records import MemberRecall, TaskVectorMetrics
from registry.store.schema import ProbeSetRow, TaskVectorRow
from registry.store.workspace import Workspace
from training.evaluate import recall
from training.sft import load_model


@dataclass(frozen=True)
class Retention:
    recall: dict[str, MemberRecall]
    retention: dict[str, float | None]  # corpus -> merged / own (None: no own figure to compare with)
    general: dict | None = None  # the base's probe set asked of the merged model (GeneralKnowledge as stored)

    @property
    def lowest(self) -> float | None:
        values = [v for v in self.retention.values() if v is not None]
        return min(values) if values else None


def own_recall(tv: TaskVectorRow) -> float | None:
    """The exact match the task vector's own model scored after training (None: never measured)."""
    scored = TaskVectorMetrics.from_json(tv.metrics).recall
    return scored.exact_match if scored else None


def measure(
    ws: Workspace,
    manifest_sha256: str,
    members: list[tuple[str, TaskVectorRow]],
    *,
    device: str,
    probe_set: ProbeSetRow | None = None,
) -> Retention:
    model, tokenizer = load_model(ws.materialize(manifest_sha256, "models", what="the merged model"), device)
    return measure_model(ws, model, tokenizer, members, device=device, probe_set=probe_set)


def measure_model(
    ws: Workspace,
    model,
    tokenizer,
    members: list[tuple[str, TaskVectorRow]],
    *,
    device: str,
    probe_set: ProbeSetRow | None = None,
) -> Retention:
    """A loaded model asked each member's questions (and the probe set, when given)."""
    recalls: dict[str, MemberRecall] = {}
    retention: dict[str, float | None] = {}
    for corpus, tv in members:
        questions = reflections_of(ws, tv)[1]
        if not questions:
            continue
        result = recall(model, tokenizer, questions, device=device)
        own = own_recall(tv)
        recalls[corpus] = MemberRecall(result.exact_match, result.f1, result.count, own)
        retention[corpus] = result.exact_match / own if own else None
    return Retention(recalls, retention, measure_general(ws, model, tokenizer, probe_set, device=device))
