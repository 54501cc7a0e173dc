"""The part of :class:`registry.Registry` that questions models: a memory, the Executive–Memory
protocol, recall on a corpus's questions, and the channel source `memo serve` follows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from registry.service.deferred import asking, devices, evaluation, protocol, questions
from registry.store.records import (
    EvaluationRecord,
    ExecutiveEvaluationRecord,
)
from registry.store.workspace import Workspace

if TYPE_CHECKING:
    from executive.memory import Memory
    from executive.protocol import ProtocolSettings, Trace
    from registry.operations.asking import ChannelSource
    from training.chat import QAPair
    from training.llm import Endpoint


class QuestionsFacade:
    ws: Workspace

    def memory(self, ref: str | None = None, *, endpoint: Endpoint | None = None, device: str = "auto") -> Memory:
        """A memory model to question: ``ref`` loaded locally, or the model behind ``endpoint``."""
        if endpoint is not None:
            return asking.remote_memory(endpoint)
        return asking.local_memory(self.ws, ref or "production", device)

    def ask(
        self, question: str, executive: Endpoint, memory: Memory, settings: ProtocolSettings | None = None
    ) -> Trace:
        """MeMo's three-stage Executive–Memory protocol on one question; the trace holds every call."""
        return asking.ask(memory, executive, question, settings or protocol.ProtocolSettings())

    def evaluate_with_executive(
        self,
        memory: Memory,
        executive: Endpoint,
        corpus: str,
        *,
        settings: ProtocolSettings | None = None,
        heldout: bool = False,
        judge: bool = False,
        limit: int | None = None,
        seed: int = 0,
        on_question: Callable[[int, int], None] | None = None,
    ) -> ExecutiveEvaluationRecord:
        """Accuracy of executive + memory on a corpus's questions (exact match, F1, optional LLM judge)."""
        return asking.evaluate_with_executive(
            self.ws,
            memory,
            executive,
            corpus,
            settings or protocol.ProtocolSettings(),
            heldout=heldout,
            use_judge=judge,
            limit=limit,
            seed=seed,
            on_question=on_question,
        )

    def channel_source(self, channel: str, *, device: str = "auto") -> ChannelSource:
        """The channel's current model, following promotes and rollbacks (what `memo serve` serves)."""
        source = asking.ChannelSource(self.ws, channel, device=devices.device_for(device))
        source.current()  # fail now (unknown channel, no merge) rather than on the first request
        return source

    def evaluate(self, ref: str, corpus: str, *, heldout: bool = False, device: str = "auto") -> EvaluationRecord:
        """Exact match and F1 of ``ref`` (model dir, corpus, corpus@vN) on a corpus's questions."""
        return evaluation.evaluate(self.ws, ref, corpus, heldout=heldout, device=device)

    def questions(self, corpus: str, *, heldout: bool = False) -> list[QAPair]:
        """A corpus's latest reflections (or their held-out paraphrases) as question-answer pairs."""
        return questions.qa_pairs(self.ws, corpus, heldout=heldout)

    def model_dir(self, ref: str) -> Path:
        """A loadable model directory for a merge, a channel, ``corpus@vN`` or a directory."""
        return evaluation.model_dir(self.ws, ref)
