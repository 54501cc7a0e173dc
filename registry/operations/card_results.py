"""A merge's figures on its model card, as the Hub's ``model-index``: the Hub shows them on the model
page. The card stored with the merged weights is written before the merge is measured; an export or a
publication adds what the registry measured since (huggingface_hub's own card classes write it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.store.records import MergeRecord

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

RECALL_TASK = ("question-answering", "Memory recall")
GENERAL_DATASET = "memo-general-knowledge"


def eval_results(merge: MergeRecord) -> list[EvalResult]:
    """Per member corpus: recall (exact match, token F1) and retention; the base's probe set: general
    knowledge kept. Only what was measured (a merge made with --no-eval has none)."""
    from huggingface_hub import EvalResult  # the Hub client loads in about a second: only when a card is written

    task_type, task_name = RECALL_TASK
    results = []
    for member in merge.members:
        recall = merge.recall.get(member.corpus)
        if recall is None:
            continue
        metrics = [("exact_match", recall.exact_match, "recall (exact match)"), ("f1", recall.f1, "recall (token F1)")]
        retention = merge.retention.get(member.corpus)
        if retention is not None:
            metrics.append(("retention", retention, "retention (merged / own recall)"))
        results += [
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=member.corpus,
                dataset_name=f"{member.ref} reflections ({recall.count} questions)",
                dataset_revision=member.ref,
                metric_type=kind,
                metric_value=round(value, 4),
                metric_name=name,
            )
            for kind, value, name in metrics
        ]
    if merge.general is not None:
        results.append(
            EvalResult(
                task_type=task_type,
                task_name="General knowledge kept",
                dataset_type=GENERAL_DATASET,
                dataset_name=f"{merge.base_model}'s probe set ({merge.general.count} questions it answers)",
                metric_type="general_knowledge_kept",
                metric_value=round(merge.general.kept, 4),
                metric_name="general knowledge kept (share of the base's correct answers)",
            )
        )
    return results


def with_results(card_text: str, merge: MergeRecord) -> str:
    """``card_text`` with the merge's ``model-index`` in its metadata (replacing any there)."""
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard(card_text)
    data = card.data
    assert isinstance(data, ModelCardData)  # what a ModelCard parses into (typed as the base class)
    results = eval_results(merge)
    data.eval_results = results or None
    data.model_name = f"memo {merge.ref}" if results else None
    return str(card)
