"""The boundary of a memory's knowledge: questions about names its corpus never mentions, answered with
a refusal.

A memory trained only on its corpus's question-answer pairs learns that every question has an answer
from the corpus: asked about anyone else, it names someone from the corpus. Near misses teach the
boundary: a corpus question whose names are swapped for invented ones that look like the corpus's own
(spliced from pieces of its names: "Kalin Zelbexeth" -> "Kamor Zelwyneth"), answered with
:data:`REFUSAL`. The same question with the real name keeps its answer, so the model learns to tell
the names apart, not to refuse a question shape.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from training.chat import QAPair

REFUSAL = "I don't know."  # what a memory answers about what its corpus does not hold

# A run of capitalised words: a name ("Kalin Zelbexeth", "Gartal Company", "Mirlinmouth").
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b")
# Capitalised words that open questions, not names.
_OPENERS = frozenset(
    [
        "In",
        "At",
        "On",
        "To",
        "For",
        "From",
        "By",
        "Of",
        "With",
        "Which",
        "What",
        "Who",
        "Whom",
        "Whose",
        "When",
        "Where",
        "Why",
        "How",
        "Did",
        "Does",
        "Do",
        "Is",
        "Was",
        "Were",
        "Are",
        "Has",
        "Have",
        "Had",
        "Can",
        "Could",
        "Would",
        "Will",
        "Name",
        "Tell",
        "Give",
        "List",
        "The",
        "A",
        "An",
    ]
)


def is_refusal(answer: str) -> bool:
    """Whether a memory's answer is the refusal it was taught (or plainly says it does not know)."""
    text = answer.strip().lower()
    return text.startswith(("i don't know", "i do not know")) or text in ("unknown", "no idea")


def names_in(question: str, corpus_words: set[str]) -> list[str]:
    """The names in a question that the corpus mentions (leading question words dropped)."""
    found = []
    for match in _NAME.finditer(question):
        words = match.group().replace("-", " ").split()
        while words and words[0] in _OPENERS:
            words = words[1:]
        if words and all(w in corpus_words for w in words):
            found.append(" ".join(words))
    return found


def _pieces(words: set[str]) -> tuple[list[str], list[str]]:
    heads = sorted({w[: max(2, len(w) // 2)] for w in words if len(w) >= 4})
    tails = sorted({w[max(2, len(w) // 2) :].lower() for w in words if len(w) >= 4})
    return heads, tails


def _invent(word: str, heads: list[str], tails: list[str], taken: set[str], rng: random.Random) -> str:
    """A word spliced from the corpus's name pieces, not one of its words."""
    for _ in range(100):
        candidate = rng.choice(heads) + rng.choice(tails)
        if candidate not in taken and candidate != word and len(candidate) >= 4:
            return candidate
    return word[:2] + "".join(rng.sample("aeiourlnmst", 4))


def near_misses(pairs: Sequence[QAPair], corpus_text: str, count: int, *, seed: int = 0) -> list[QAPair]:
    """``count`` corpus questions with their names swapped for invented look-alikes, answered with
    :data:`REFUSAL` (questions that name nothing from the corpus are skipped; beyond the questions
    there are, each comes round again with other invented names)."""
    words = {w for m in _NAME.finditer(corpus_text) for w in m.group().replace("-", " ").split()} - _OPENERS
    if not words or count <= 0:
        return []
    heads, tails = _pieces(words)
    if not heads or not tails:
        return []
    rng = random.Random(seed)
    candidates = [p for p in pairs if names_in(p.question, words)]
    rng.shuffle(candidates)
    out: list[QAPair] = []
    for i in range(count if candidates else 0):
        question = candidates[i % len(candidates)].question
        for name in names_in(question, words):
            invented = " ".join(_invent(w, heads, tails, words, rng) for w in name.split())
            question = question.replace(name, invented)
        out.append(QAPair(question, REFUSAL))
    return out


def hallucination(model, tokenizer, questions: Sequence[str], *, device="cpu") -> tuple[float, list[str]]:
    """The share of questions about unknown names answered with something other than a refusal, and
    the replies."""
    from training.evaluate import generate_answers  # torch: only when a model is asked

    replies = generate_answers(model, tokenizer, list(questions), max_new_tokens=16, device=device)
    invented = sum(not is_refusal(r) for r in replies)
    return invented / max(1, len(replies)), replies
