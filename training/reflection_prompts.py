"""The GENERATOR's prompts and reply shapes for the five reflection stages, in one place.

``PROMPT_VERSION`` is part of every cache key: change any prompt or shape
here and bump it, so cached replies of the old prompts are not reused.

Every prompt is a system message naming the stage (first line, so logs and
test servers can tell the stages apart) and a user message that ends with
``INPUT:`` and the stage's input as one JSON object.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

PROMPT_VERSION = "memo-reflect/1"

_PAIR_RULES = """Every pair must stand alone, read without the document:
- no pronouns without their referent; name people, places and things in full;
- no relative time ("last year", "recently"): give the date or year;
- never mention "the document", "the text" or "the passage";
- answers are short: a name, a number, a date or one to two sentences."""

STAGES: dict[str, str] = {
    "extract-direct": f"""Turn a passage into question-answer pairs that cover EVERY fact it states, one fact per pair.
{_PAIR_RULES}
For each pair list the named entities it involves.
Reply with JSON only: {{"pairs": [{{"question": "...", "answer": "...", "entities": ["..."]}}]}}""",
    "extract-indirect": f"""Turn a passage into question-answer pairs for facts it implies but does not state in one
sentence: derived attributes (ages, durations, counts), relations asked in both directions
("Who founded X?" and "What did Y found?"), resolved pronouns, date arithmetic, and chains of
cause, action and outcome asked from several angles. Use only what the passage supports.
{_PAIR_RULES}
Reply with JSON only: {{"pairs": [{{"question": "...", "answer": "...", "entities": ["..."]}}]}}""",
    "consolidate": f"""You get numbered question-answer pairs taken from one passage, and the passage.
1. Keep one pair of each group of duplicates; where pairs conflict keep the one the passage supports.
2. Combine pairs that share an entity, time, relation, cause or outcome into richer pairs
   (two or three facts each, answers of a few sentences).
{_PAIR_RULES}
Reply with JSON only: {{"keep": [indices of pairs to keep], "combined": [{{"question": "...", "answer": "...",
"entities": ["..."]}}]}}""",
    "verify": """You get a source passage and numbered question-answer pairs made from it. For each pair decide:
- supported: is every fact in the answer stated in or directly implied by the passage?
- self-contained: can the pair be understood without the passage (no unresolved pronouns, no relative
  time, no "the document", no vague references, no missing context, a complete answer)?
If a supported pair is not self-contained, rewrite it from the passage, adding no new facts.
Reply with JSON only: {"verdicts": [{"index": 0, "supported": true, "rewrite": null or
{"question": "...", "answer": "..."}}]} with one verdict per pair.""",
    "surface": f"""You get verified question-answer pairs about one passage's entities. Write questions that
DESCRIBE an entity without naming it, whose answer is the entity's name: from one fact, from two facts,
from several facts, and "the X related to named Y" traversals. They let a reader identify an entity
from a description.
{_PAIR_RULES}
Reply with JSON only: {{"pairs": [{{"question": "...", "answer": "entity name", "entities": ["..."]}}]}}""",
    "synthesize": f"""You get verified question-answer pairs from several related documents. Write multi-hop pairs
that need facts from at least two of the documents:
- converging clues: "Who did [fact from one document] and [fact from another]?";
- shared properties: "Which [kind of thing] share [property]?", the answer enumerating them.
Use only the facts given.
{_PAIR_RULES}
Reply with JSON only: {{"pairs": [{{"question": "...", "answer": "...", "entities": ["..."]}}]}}""",
}


class GeneratedPair(BaseModel):
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    entities: list[str] = Field(default_factory=list)


class PairsReply(BaseModel):
    pairs: list[GeneratedPair]


class ConsolidateReply(BaseModel):
    keep: list[int]
    combined: list[GeneratedPair] = Field(default_factory=list)


class Rewrite(BaseModel):
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


class Verdict(BaseModel):
    index: int
    supported: bool
    rewrite: Rewrite | None = None


class VerifyReply(BaseModel):
    verdicts: list[Verdict]


# MeMo's five stages, in order, each with the prompts it runs.
STAGE_PROMPTS: dict[str, tuple[str, ...]] = {
    "extract": ("extract-direct", "extract-indirect"),
    "consolidate": ("consolidate",),
    "verify": ("verify",),
    "surface": ("surface",),
    "synthesize": ("synthesize",),
}

REPLY_SHAPES: dict[str, type[BaseModel]] = {
    "extract-direct": PairsReply,
    "extract-indirect": PairsReply,
    "consolidate": ConsolidateReply,
    "verify": VerifyReply,
    "surface": PairsReply,
    "synthesize": PairsReply,
}


def messages(stage: str, payload: dict) -> list[dict]:
    """The chat for one call of ``stage`` on ``payload`` (its input, as JSON)."""
    system = f"memo reflections, stage: {stage} ({PROMPT_VERSION})\n\n{STAGES[stage]}"
    user = "Work on this input.\n\nINPUT:\n" + json.dumps(payload, ensure_ascii=False, indent=1)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
