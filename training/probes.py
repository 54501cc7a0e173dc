"""General knowledge: questions a base answers correctly itself, asked again of what is made from it.

A probe is a short real-world question with its answer and accepted aliases (``"7"``, ``"seven"``).
A reply counts when one of them appears in it as whole words, after SQuAD-style normalisation: a
pretrained chat model answers in a sentence ("The capital of France is Paris."), not with the bare
answer that memory fine-tuning teaches, so exact match would score the base itself near zero.

General knowledge kept = probes still answered / probes in the set; the set holds only what the base
answers, so the base itself scores 1.0 and a model that forgot everything 0.0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.qa_files import QAFileError, read_qa_file
from training.settings import PROBE_LIMIT
from training.text import normalize

PROBE_TOKENS = 24  # new tokens per reply: a short sentence holds the answer


@dataclass(frozen=True)
class Probe:
    question: str
    answer: str
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            **({"aliases": list(self.aliases)} if self.aliases else {}),
        }

    def answered_by(self, reply: str) -> bool:
        said = f" {normalize(reply)} "
        return any(f" {normalize(a)} " in said for a in (self.answer, *self.aliases) if normalize(a))


@dataclass(frozen=True)
class ProbeScore:
    correct: int
    count: int
    replies: tuple[str, ...] = field(default=(), repr=False)

    @property
    def kept(self) -> float | None:
        return self.correct / self.count if self.count else None

    def to_json(self) -> dict:
        return {"kept": self.kept, "correct": self.correct, "count": self.count}


def probes_of(records: Sequence[dict]) -> list[Probe]:
    return [
        Probe(r["question"], r["answer"], tuple(str(a) for a in r.get("aliases") or () if str(a).strip()))
        for r in records
    ]


def read_probes(path: Path) -> list[Probe]:
    """Probes from a JSON-lines file of ``question``, ``answer`` and optional ``aliases`` (a list)."""
    records = read_qa_file(path)
    for lineno, record in enumerate(records, 1):
        aliases = record.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise QAFileError(f"{path}: record {lineno}: 'aliases' must be a list of strings")
    return probes_of(records)


def ask(model, tokenizer, probes: Sequence[Probe], *, device="cpu", batch: int = 32) -> ProbeScore:
    """Greedy replies through the chat template, each scored against its probe."""
    from training.evaluate import generate_answers  # torch: only when a model is asked

    replies = generate_answers(
        model, tokenizer, [p.question for p in probes], batch=batch, max_new_tokens=PROBE_TOKENS, device=device
    )
    correct = sum(p.answered_by(r) for p, r in zip(probes, replies))
    return ProbeScore(correct, len(probes), tuple(replies))


@dataclass(frozen=True)
class Selection:
    """What a base was asked, how many it answered, and the probes kept of those."""

    asked: int
    answered: int
    kept: tuple[Probe, ...]


def select_known(
    model, tokenizer, candidates: Sequence[Probe], *, device="cpu", limit: int = PROBE_LIMIT, batch: int = 32
) -> Selection:
    """Up to ``limit`` candidates the model answers: asked in a seeded order, a batch at a time, until
    ``limit`` are known (a base that knows most of the bank is not asked all of it)."""
    order = list(candidates)
    random.Random(0).shuffle(order)
    known: list[Probe] = []
    asked = 0
    while asked < len(order) and len(known) < limit:
        chunk = order[asked : asked + batch]
        score = ask(model, tokenizer, chunk, device=device, batch=batch)
        known += [p for p, r in zip(chunk, score.replies) if p.answered_by(r)]
        asked += len(chunk)
    kept = set(map(id, known[:limit]))
    return Selection(asked, len(known), tuple(p for p in candidates if id(p) in kept))
