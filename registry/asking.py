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
from registry.evaluation import model_dir, qa_pairs
from registry.merged_models import merged_model_dir
from registry.merges import channel_head
from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database, row_of
from registry.store.errors import InvalidInput, LLMFailed, NotFound
from registry.store.schema import MergeRow
from registry.training_ops import device_for, sample
from training.llm import ChatClient, Endpoint, LLMError


def local_memory(db: Database, store: LocalBlobStore, home: Path, ref: str, device: str) -> LocalMemory:
    return LocalMemory(model_dir(db, store, home, ref), device=device_for(device))


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
    db: Database,
    store: LocalBlobStore,
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
) -> dict:
    """Executive + memory accuracy on a corpus's questions: exact match, token F1, and the judge's verdict."""
    from training.evaluate import normalize, token_f1

    pairs = qa_pairs(db, store, corpus, heldout=heldout)
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
    result = {
        "corpus": corpus,
        "set": "heldout" if heldout else "reflections",
        "count": len(rows),
        "exact_match": sum(r["exact_match"] for r in rows) / n,
        "f1": sum(r["f1"] for r in rows) / n,
        "executive_calls": sum(r["executive_calls"] for r in rows) / n,
        "questions": rows,
    }
    if use_judge:
        result["judge"] = sum(r["judge"] for r in rows) / n
    return result


class ChannelSource:
    """The channel's current merge as a memory, reloaded when the channel moves (``memo serve``)."""

    def __init__(
        self,
        db: Database,
        store: LocalBlobStore,
        home: Path,
        channel: str,
        *,
        device: str = "cpu",
        loader: Callable[[Path, str], Memory] | None = None,
    ) -> None:
        self.db, self.store, self.home, self.name = db, store, home, channel
        self.device = device
        self._load = loader or (lambda directory, device: LocalMemory(directory, device=device))
        self._lock = threading.Lock()
        self._merge_id: int | None = None
        self._memory: Memory | None = None  # set with _merge_id, on the first current()

    def current(self) -> tuple[str, Memory]:
        with self.db.read() as session:
            head = channel_head(session, self.name)
        if head is None:
            raise NotFound(
                f"channel {self.name!r} does not exist or points at no merge; "
                f"run `memo promote MERGE --channel {self.name}`"
            )
        with self._lock:
            if head != self._merge_id:
                with self.db.read() as session:
                    directory = merged_model_dir(self.store, self.home, row_of(session, MergeRow, head))
                self._memory = self._load(directory, self.device)
                self._merge_id = head
            assert self._memory is not None  # loaded above whenever _merge_id changed
            return f"merge-{head}", self._memory
