"""The EXECUTIVE's prompts and reply shapes, in one place (versioned like the generator's).

As with the reflection prompts, the system message's first line names the
stage, and the user message ends with ``INPUT:`` and the stage's input as
one JSON object: the question, what the memory has answered so far, the
dead ends and the candidates.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field

PROTOCOL_VERSION = "memo-executive/1"

_MEMORY = """You cannot read any documents. You can only ask a MEMORY model short, self-contained questions;
it answers each one on its own, without context, from what it memorised, or says "I don't know".
Every question you write must stand alone: name people, places and things in full, never say
"it", "the document" or "the above"."""

STAGES: dict[str, str] = {
    "decompose": f"""{_MEMORY}
Stage 1 (grounding): split the user's question into atomic clues. Mark each clue as entity-narrowing or
answer-carrying and as high or low value. Write up to MAX_QUESTIONS memory questions: about three per
high-value clue, one per low-value clue, and a few that combine two or three high-value clues.
Reply with JSON only: {{"clues": [{{"text": "...", "kind": "entity" or "answer", "value": "high" or "low"}}],
"questions": ["..."]}}""",
    "narrow": f"""{_MEMORY}
Stage 2 (entity identification): from the facts so far, rank the candidate entities the question is about.
If one candidate is confirmed by the facts, reply status "confirmed" with it first. Otherwise ask up to
MAX_QUESTIONS new questions that tell the candidates apart; re-ask unanswered questions in simpler form.
Never ask a dead end again. Reply status "give_up" if no question can help.
Reply with JSON only: {{"status": "confirmed" or "continue" or "give_up", "candidates": ["best first"],
"questions": ["..."]}}""",
    "gather": f"""{_MEMORY}
Stage 3 (answer seeking): the target entity is given. Ask up to MAX_QUESTIONS questions that each name the
target and gather the facts the answer needs. You may pivot to another candidate if the facts contradict the
target. As soon as the facts suffice, reply status "answer".
Reply with JSON only: {{"status": "answer" or "continue", "target": "...", "questions": ["..."]}}""",
    "synthesize": """Final synthesis: answer the user's question from the memory's answers alone.
Prefer the candidate that satisfies the most constraints, not the one named most often.
Give the shortest complete answer (a name, a number, a date or one sentence).
Reply with JSON only: {"answer": "...", "target": "..." or null, "reasoning": "one sentence"}""",
    "judge": """Decide whether a predicted answer to a question means the same as the reference answer.
Ignore wording, case and extra detail that does not contradict the reference.
Reply with JSON only: {"correct": true or false}""",
}


class Clue(BaseModel):
    text: str
    kind: str = "entity"
    value: str = "high"


class DecomposeReply(BaseModel):
    clues: list[Clue] = Field(default_factory=list)
    questions: list[str]


class NarrowReply(BaseModel):
    status: Literal["confirmed", "continue", "give_up"]
    candidates: list[str] = Field(default_factory=list)
    questions: list[str] = Field(default_factory=list)


class GatherReply(BaseModel):
    status: Literal["answer", "continue"]
    target: str | None = None
    questions: list[str] = Field(default_factory=list)


class SynthesisReply(BaseModel):
    answer: str
    target: str | None = None
    reasoning: str = ""


class JudgeReply(BaseModel):
    correct: bool


def messages(stage: str, payload: dict, *, max_questions: int = 8) -> list[dict]:
    text = STAGES[stage].replace("MAX_QUESTIONS", str(max_questions))
    system = f"memo executive, stage: {stage} ({PROTOCOL_VERSION})\n\n{text}"
    user = "INPUT:\n" + json.dumps(payload, ensure_ascii=False, indent=1)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
