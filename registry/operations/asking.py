"""`memo ask`, `memo serve` and `memo eval --executive-url`: the memory model meets an executive.

The memory is any model reference `memo eval` takes (a channel, a merge, a
corpus, a directory), loaded locally, or a model behind an OpenAI-compatible
URL. :class:`ChannelSource` follows a channel for `memo serve`: each request
checks the channel's current merge (one indexed read) and loads the new
model when a promote or rollback moved it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executive.memory import LocalMemory, Memory, RemoteMemory
from executive.protocol import ExecutiveProtocol, ProtocolSettings, Trace, judge
from registry.operations.devices import device_for
from registry.operations.evaluation import model_dir
from registry.operations.merges import channel_head, merged_model_dir
from registry.operations.questions import qa_pairs, sample
from registry.store.database import row_of
from registry.store.errors import InvalidInput, LLMFailed, NotFound
from registry.store.records import ExecutiveEvaluationRecord
from registry.store.schema import MergeRow
from registry.store.workspace import Workspace
from training.evaluate import normalize, token_f1
from training.llm import ChatClient, Endpoint, LLMError


def local_memory(ws: Workspace, ref: str, device: str) -> LocalMemory:
    return LocalMemory(model_dir(ws, ref), device=device_for(device))


def remote_memory(endpoint: Endpoint) -> RemoteMemory:
    return RemoteMemory(ChatClient(endpoint))


def ask(memory: Memory, executive: Endpoint, question: str, settings: ProtocolSettings) -> Trace:
    if not question.strip():
        raise InvalidInput("the question is empty")
    try:
        return ExecutiveProtocol(ChatClient(executive), memory, settings).ask(question.strip())
    except LLMError as e:
        raise LLMFailed(str(e)) from e


def evaluate_with_executive(
    ws: Workspace,
    memory: Memory,
    executive: Endpoint,
    corpus: str,
    settings: ProtocolSettings,
    *,
    heldout: bool = False,
    use_judge: bool = False,
    limit: int | None = None,
    seed: int = 0,
    on_question: Callable[[int, int], None] | None = None,
) -> ExecutiveEvaluationRecord:
    """Executive + memory accuracy on a corpus's questions: exact match, token F1, and the judge's verdict."""
    pairs = qa_pairs(ws, corpus, heldout=heldout)
    if limit is not None:
        pairs = sample(pairs, limit, seed)
    client = ChatClient(executive)
    protocol = ExecutiveProtocol(client, memory, settings)
    rows: list[dict[str, Any]] = []
    try:
        for i, pair in enumerate(pairs):
            trace = protocol.ask(pair.question)
            row = {
                "question": pair.question,
                "reference": pair.answer,
                "answer": trace.answer,
                "exact_match": normalize(trace.answer) == normalize(pair.answer),
                "f1": token_f1(trace.answer, pair.answer),
                "executive_calls": trace.executive_calls,
                "memory_calls": trace.memory_calls,
            }
            if use_judge:
                row["judge"] = judge(client, pair.question, pair.answer, trace.answer, json_mode=settings.json_mode)
            rows.append(row)
            if on_question:
                on_question(i + 1, len(pairs))
    except LLMError as e:
        raise LLMFailed(str(e)) from e
    n = max(1, len(rows))
    return ExecutiveEvaluationRecord(
        corpus=corpus,
        set="heldout" if heldout else "reflections",
        count=len(rows),
        exact_match=sum(r["exact_match"] for r in rows) / n,
        f1=sum(r["f1"] for r in rows) / n,
        executive_calls=sum(r["executive_calls"] for r in rows) / n,
        judge=sum(r["judge"] for r in rows) / n if use_judge else None,
        questions=tuple(rows),
    )


class ChannelSource:
    """The channel's current merge as a memory, reloaded when the channel moves (``memo serve``)."""

    def __init__(
        self,
        ws: Workspace,
        channel: str,
        *,
        device: str = "cpu",
        loader: Callable[[Path, str], Memory] | None = None,
    ) -> None:
        self.ws, self.name = ws, channel
        self.device = device
        self._load = loader or (lambda directory, device: LocalMemory(directory, device=device))
        self._lock = threading.Lock()
        self._merge_id: int | None = None
        self._memory: Memory | None = None  # set with _merge_id, on the first current()

    def current(self) -> tuple[str, Memory]:
        with self.ws.db.read() as session:
            head = channel_head(session, self.name)
        if head is None:
            raise NotFound(
                f"channel {self.name!r} does not exist or points at no merge; "
                f"run `memo promote MERGE --channel {self.name}`"
            )
        with self._lock:
            if head != self._merge_id:
                with self.ws.db.read() as session:
                    directory = merged_model_dir(self.ws, row_of(session, MergeRow, head))
                self._memory = self._load(directory, self.device)
                self._merge_id = head
            assert self._memory is not None  # loaded above whenever _merge_id changed
            return f"merge-{head}", self._memory
