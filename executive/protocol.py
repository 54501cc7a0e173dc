"""The Executive–Memory question protocol (MeMo), three stages with bounded rounds.

1. **Decompose**: the executive splits the question into clues and writes
   sub-questions; the memory answers them (each call context-free).
2. **Narrow**: follow-up rounds rank candidate entities and ask questions
   that tell them apart, until one target is confirmed, the executive gives
   up, or the rounds run out (then the top candidate is taken). A question
   answered "I don't know" ``dead_end_after`` times is never asked again.
3. **Gather and synthesize**: rounds of questions naming the target until the
   executive says the facts suffice, then one synthesis call over every
   answer that was not "I don't know".

The executive keeps the whole history; the memory sees one question at a
time. Every call is recorded in a :class:`Trace`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from executive.memory import Memory, is_unknown
from executive.prompts import (
    DecomposeReply,
    GatherReply,
    JudgeReply,
    NarrowReply,
    SynthesisReply,
    messages,
)
from training.llm import ChatClient, Sampling


@dataclass(frozen=True)
class ProtocolSettings:
    max_questions: int = 8  # memory questions per executive turn
    narrow_rounds: int = 7  # MeMo: at most 7 identification turns
    gather_rounds: int = 8  # MeMo: at most 8 answer-seeking turns
    dead_end_after: int = 3  # "I don't know" this often: never asked again
    # MeMo's executive temperatures by stage: grounding, identification, answer seeking, synthesis.
    temperatures: tuple[float, float, float, float] = (0.4, 0.4, 1.0, 0.3)
    attempts: int = 3  # tries per executive call when its JSON is malformed
    json_mode: bool = True

    def __post_init__(self) -> None:
        if self.max_questions < 1 or self.narrow_rounds < 0 or self.gather_rounds < 0 or self.dead_end_after < 1:
            raise ValueError("questions per turn and the dead-end count must be >= 1, rounds >= 0")


@dataclass(frozen=True)
class MemoryCall:
    question: str
    answer: str
    unknown: bool


@dataclass
class Step:
    stage: str  # decompose | narrow | gather | synthesize
    round: int
    executive: dict  # the executive's parsed reply
    memory: list[MemoryCall] = field(default_factory=list)


@dataclass
class Trace:
    question: str
    steps: list[Step] = field(default_factory=list)
    target: str | None = None
    answer: str = ""
    stopped: str = ""  # why entity identification ended: confirmed | gave_up | rounds | no_questions

    @property
    def executive_calls(self) -> int:
        return len(self.steps)

    @property
    def memory_calls(self) -> int:
        return sum(len(s.memory) for s in self.steps)

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "target": self.target,
            "stopped": self.stopped,
            "executive_calls": self.executive_calls,
            "memory_calls": self.memory_calls,
            "steps": [asdict(s) for s in self.steps],
        }


class ExecutiveProtocol:
    def __init__(self, executive: ChatClient, memory: Memory, settings: ProtocolSettings = ProtocolSettings()):
        self.executive, self.memory, self.settings = executive, memory, settings

    def ask(self, question: str) -> Trace:
        trace = Trace(question)
        asked: Counter[str] = Counter()  # "I don't know" count per question
        reply = self._call(trace, "decompose", 0, {"question": question}, DecomposeReply)
        self._consult(trace, reply.questions, asked)
        candidates = self._narrow(trace, asked)
        trace.target = candidates[0] if candidates else None
        self._gather(trace, asked, candidates)
        final = self._call(trace, "synthesize", 3, self._state(trace, asked, candidates), SynthesisReply)
        trace.answer = final.answer.strip()
        trace.target = final.target or trace.target
        return trace

    def _narrow(self, trace: Trace, asked: Counter[str]) -> list[str]:
        candidates: list[str] = []
        for round_ in range(1, self.settings.narrow_rounds + 1):
            reply = self._call(trace, "narrow", 1, self._state(trace, asked, candidates), NarrowReply, round_=round_)
            candidates = [c.strip() for c in reply.candidates if c.strip()] or candidates
            if reply.status != "continue":
                trace.stopped = "confirmed" if reply.status == "confirmed" else "gave_up"
                return candidates
            if not self._consult(trace, reply.questions, asked):
                trace.stopped = "no_questions"
                return candidates
        trace.stopped = "rounds"
        return candidates

    def _gather(self, trace: Trace, asked: Counter[str], candidates: list[str]) -> None:
        for round_ in range(1, self.settings.gather_rounds + 1):
            reply = self._call(trace, "gather", 2, self._state(trace, asked, candidates), GatherReply, round_=round_)
            if reply.target and reply.target.strip():
                trace.target = reply.target.strip()  # a pivot to another candidate
            if reply.status == "answer" or not self._consult(trace, reply.questions, asked):
                return

    def _consult(self, trace: Trace, questions: list[str], asked: Counter[str]) -> int:
        """Ask the memory the new, live questions (deduplicated, capped); record on the last step."""
        fresh: list[str] = []
        for q in (q.strip() for q in questions):
            if q and q not in fresh and asked[q] < self.settings.dead_end_after:
                fresh.append(q)
        fresh = fresh[: self.settings.max_questions]
        for q, a in zip(fresh, self.memory.answer(fresh)):
            call = MemoryCall(q, a, is_unknown(a))
            asked[q] += call.unknown
            trace.steps[-1].memory.append(call)
        return len(fresh)

    def _state(self, trace: Trace, asked: Counter[str], candidates: list[str]) -> dict:
        facts = [{"question": c.question, "answer": c.answer} for s in trace.steps for c in s.memory if not c.unknown]
        return {
            "question": trace.question,
            "facts": facts,
            "target": trace.target,
            "candidates": candidates,
            "dead_ends": sorted(q for q, n in asked.items() if n >= self.settings.dead_end_after),
            "unanswered": sorted(q for q, n in asked.items() if 0 < n < self.settings.dead_end_after),
        }

    def _call(self, trace: Trace, stage: str, temp: int, payload: dict, shape, *, round_: int = 0):
        reply, _ = self.executive.complete_json(
            messages(stage, payload, max_questions=self.settings.max_questions),
            shape,
            Sampling(temperature=self.settings.temperatures[temp]),
            what=f"executive stage {stage}",
            attempts=self.settings.attempts,
            json_mode=self.settings.json_mode,
        )
        trace.steps.append(Step(stage, round_, reply.model_dump(mode="json")))
        return reply


def judge(executive: ChatClient, question: str, reference: str, prediction: str, *, json_mode: bool = True) -> bool:
    """An LLM judge's binary verdict (MeMo's metric) on one prediction."""
    reply, _ = executive.complete_json(
        messages("judge", {"question": question, "reference": reference, "prediction": prediction}),
        JudgeReply,
        Sampling(temperature=0.0),
        what="judge",
        json_mode=json_mode,
    )
    return reply.correct
