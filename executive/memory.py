"""The MEMORY model the executive questions: local (transformers) or behind an OpenAI-compatible URL.

Each memory call is one context-free question, as in MeMo. Independent
questions go together: one batched generation locally, concurrent requests
remotely.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from osutil.lazy_import import lazy_module
from training.llm import ChatClient, Sampling

if TYPE_CHECKING:
    import training.evaluate as evaluate
    import training.sft as sft
else:  # torch and transformers: loaded when a local model is
    evaluate = lazy_module("training.evaluate")
    sft = lazy_module("training.sft")

_UNKNOWN = re.compile(r"\b(i do not know|i don'?t know|unknown|no idea|not sure)\b", re.IGNORECASE)


def is_unknown(answer: str) -> bool:
    """An empty answer or an "I don't know" (these are never shown to the executive as facts)."""
    return not answer.strip() or bool(_UNKNOWN.search(answer))


class Memory(Protocol):
    def answer(self, questions: list[str]) -> list[str]: ...


class LocalMemory:
    """A model directory loaded with transformers (safetensors only), answering greedily."""

    def __init__(self, directory: Path, *, device: str = "cpu", max_new_tokens: int = 48) -> None:
        self.directory = Path(directory)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.model, self.tokenizer = sft.load_model(self.directory, device)
        self._lock = threading.Lock()  # one generation at a time (a server answers from many threads)

    def answer(self, questions: list[str]) -> list[str]:
        if not questions:
            return []
        with self._lock:
            return evaluate.generate_answers(
                self.model, self.tokenizer, questions, device=self.device, max_new_tokens=self.max_new_tokens
            )


class RemoteMemory:
    """A memory model served elsewhere (e.g. by ``memo serve`` or vLLM)."""

    def __init__(
        self,
        client: ChatClient,
        sampling: Sampling = Sampling(temperature=0.1, max_tokens=128),
        *,
        concurrency: int = 8,
    ) -> None:
        self.client, self.sampling, self.concurrency = client, sampling, concurrency

    def _one(self, question: str) -> str:
        text, _ = self.client.complete([{"role": "user", "content": question}], self.sampling)
        return text.strip()

    def answer(self, questions: list[str]) -> list[str]:
        if not questions:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(questions))) as pool:
            return list(pool.map(self._one, questions))
