"""Reflections: a corpus's documents -> question-answer pairs, in MeMo's five stages.

1. extraction per chunk (a direct and an indirect pass),
2. consolidation per chunk (duplicates merged, conflicts resolved, facts combined),
3. verification of every pair against its source chunk (unsupported pairs dropped,
   pairs that do not stand alone rewritten),
4. entity surfacing (questions that describe an entity and are answered by its name),
5. cross-document synthesis over groups of documents that share entities.

Every stage works per chunk, so every pair is checked against the text it
came from. Calls within a stage run concurrently (bounded); every validated
reply is cached by (prompt version, model, input hash), so a run that was
interrupted resumes without repeating a call. Knows nothing of SQL: the
registry passes a cache backed by its blob store.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

from training.llm import ChatClient, Sampling
from training.reflection_prompts import PROMPT_VERSION, REPLY_SHAPES, GeneratedPair, messages

U = TypeVar("U")
R = TypeVar("R")


class CallCache(Protocol):
    """Validated generator replies by cache key (see :func:`cache_key`)."""

    def get(self, key: str) -> dict | None: ...
    def put(self, key: str, entry: dict) -> None: ...


@dataclass(frozen=True)
class ReflectSettings:
    chunk_words: int = 2000  # MeMo used chunks of several thousand words
    overlap_words: int = 200
    temperature: float = 1.1  # MeMo's generator sampling
    top_p: float = 0.95
    concurrency: int = 4  # calls in flight at once
    attempts: int = 3  # tries per call when the reply is malformed
    min_pairs_to_consolidate: int = 3  # MeMo skips documents with fewer pairs
    verify_batch: int = 30  # pairs per verification call
    group_max_documents: int = 5  # documents per cross-document group
    group_max_pairs: int = 40  # pairs shown per cross-document call
    json_mode: bool = True  # ask for response_format json_object

    def __post_init__(self) -> None:
        if self.chunk_words < 50 or not 0 <= self.overlap_words < self.chunk_words:
            raise ValueError("chunk words must be >= 50 and overlap between 0 and the chunk size")
        if self.concurrency < 1 or self.attempts < 1:
            raise ValueError("concurrency and attempts must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SourceDocument:
    name: str
    text: str


@dataclass(frozen=True)
class Chunk:
    document: str
    index: int
    text: str


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    document: str
    stage: str
    chunk: int | None = None
    entities: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()  # the group, for cross-document pairs

    @classmethod
    def of(cls, g: GeneratedPair, chunk: Chunk, stage: str) -> Pair:
        return cls(
            g.question.strip(),
            g.answer.strip(),
            chunk.document,
            stage,
            chunk.index,
            tuple(e.strip() for e in g.entities if e.strip()),
        )

    def record(self) -> dict:
        r: dict[str, Any] = {
            "question": self.question,
            "answer": self.answer,
            "document": self.document,
            "stage": self.stage,
        }
        if self.chunk is not None:
            r["chunk"] = self.chunk
        if self.entities:
            r["entities"] = list(self.entities)
        if self.documents:
            r["documents"] = list(self.documents)
        return r


@dataclass
class StageUsage:
    calls: int = 0  # calls sent to the endpoint (a malformed reply's retries count once)
    cached: int = 0  # calls answered from the cache
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ReflectionRun:
    records: list[dict]
    counts: dict[str, dict[str, int]]
    usage: dict[str, StageUsage] = field(default_factory=dict)

    def usage_json(self) -> dict:
        return {stage: asdict(u) for stage, u in self.usage.items()}


def cache_key(stage: str, model: str, chat: list[dict], sampling: Sampling) -> str:
    blob = json.dumps(
        {"prompt": PROMPT_VERSION, "stage": stage, "model": model, "messages": chat, "sampling": asdict(sampling)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def chunk_document(doc: SourceDocument, words: int, overlap: int) -> list[Chunk]:
    tokens = doc.text.split()
    step = words - overlap
    starts = range(0, max(1, len(tokens) - overlap), step)
    return [Chunk(doc.name, i, " ".join(tokens[s : s + words])) for i, s in enumerate(starts)]


class _Caller:
    """Cached, validated, counted calls of one stage prompt."""

    def __init__(self, client: ChatClient, cache: CallCache, settings: ReflectSettings) -> None:
        self.client, self.cache, self.settings = client, cache, settings
        self.sampling = Sampling(temperature=settings.temperature, top_p=settings.top_p)
        self.usage: dict[str, StageUsage] = {}
        self._lock = threading.Lock()

    def __call__(self, stage: str, payload: dict, what: str) -> Any:  # the stage's reply shape (REPLY_SHAPES)
        chat = messages(stage, payload)
        key = cache_key(stage, self.client.endpoint.model, chat, self.sampling)
        shape = REPLY_SHAPES[stage]
        hit = self.cache.get(key)
        if hit is not None:
            self._count(stage, cached=1)
            return shape.model_validate(hit["reply"])
        reply, usage = self.client.complete_json(
            chat,
            shape,
            self.sampling,
            what=f"stage {stage}, {what}",
            attempts=self.settings.attempts,
            json_mode=self.settings.json_mode,
        )
        self.cache.put(
            key,
            {
                "reply": reply.model_dump(mode="json"),
                "stage": stage,
                "model": self.client.endpoint.model,
                "prompt_version": PROMPT_VERSION,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            },
        )
        self._count(stage, calls=1, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        return reply

    def _count(self, stage: str, **amounts: int) -> None:
        with self._lock:
            u = self.usage.setdefault(stage, StageUsage())
            for name, n in amounts.items():
                setattr(u, name, getattr(u, name) + n)


def _run(fn: Callable[[U], R], units: Sequence[U], *, concurrency: int, desc: str, progress: bool) -> list[R]:
    """``fn`` over ``units``, at most ``concurrency`` at once, results in unit order; the first error stops all."""
    if not units:
        return []
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(units), desc=desc, unit="call", disable=not progress, leave=False) as bar,
    ):
        futures = [pool.submit(fn, u) for u in units]
        for f in futures:
            f.add_done_callback(lambda _: bar.update())
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            failed.result()  # raises the failure
        return [f.result() for f in futures]


def _numbered(pairs: Sequence[Pair]) -> list[dict]:
    return [{"index": i, "question": p.question, "answer": p.answer} for i, p in enumerate(pairs)]


def _where(chunk: Chunk) -> str:
    return f"document {chunk.document!r} chunk {chunk.index}"


class ReflectionPipeline:
    """The five stages over one corpus's documents."""

    def __init__(
        self,
        client: ChatClient,
        cache: CallCache,
        settings: ReflectSettings = ReflectSettings(),
        *,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.call = _Caller(client, cache, settings)

    def run(self, documents: Sequence[SourceDocument]) -> ReflectionRun:
        s = self.settings
        chunks = [c for d in documents for c in chunk_document(d, s.chunk_words, s.overlap_words)]
        extracted = self._extract(chunks)
        consolidated, consolidation = self._consolidate(chunks, extracted)
        verified, verification = self._verify(chunks, consolidated)
        surfaced = self._surface(chunks, verified)
        synthesized = self._synthesize(verified)
        pairs = _unique([p for ps in verified for p in ps] + surfaced + synthesized)
        counts = {
            "documents": {"documents": len(documents), "chunks": len(chunks)},
            "extract": {"pairs": sum(map(len, extracted))},
            "consolidate": consolidation,
            "verify": verification,
            "surface": {"pairs": len(surfaced)},
            "synthesize": {"pairs": len(synthesized)},
            "total": {"pairs": len(pairs)},
        }
        return ReflectionRun([p.record() for p in pairs], counts, self.call.usage)

    def _stage(self, n: int, name: str, fn: Callable[[U], R], units: Sequence[U]) -> list[R]:
        return _run(
            fn, units, concurrency=self.settings.concurrency, desc=f"reflect {n}/5 {name}", progress=self.progress
        )

    def _extract(self, chunks: list[Chunk]) -> list[list[Pair]]:
        def one(unit: tuple[Chunk, str]) -> list[Pair]:
            chunk, stage = unit
            reply = self.call(stage, {"document": chunk.document, "passage": chunk.text}, _where(chunk))
            return [Pair.of(g, chunk, "extract") for g in reply.pairs]

        units = [(c, stage) for c in chunks for stage in ("extract-direct", "extract-indirect")]
        found = self._stage(1, "extract", one, units)
        return [found[2 * i] + found[2 * i + 1] for i in range(len(chunks))]

    def _consolidate(self, chunks: list[Chunk], pairs: list[list[Pair]]) -> tuple[list[list[Pair]], dict]:
        def one(i: int) -> list[Pair]:
            chunk, own = chunks[i], pairs[i]
            if len(own) < self.settings.min_pairs_to_consolidate:
                return own
            reply = self.call(
                "consolidate",
                {"document": chunk.document, "passage": chunk.text, "pairs": _numbered(own)},
                _where(chunk),
            )
            kept = [own[k] for k in sorted(set(reply.keep)) if 0 <= k < len(own)]
            return kept + [Pair.of(g, chunk, "consolidate") for g in reply.combined]

        result = self._stage(2, "consolidate", one, range(len(chunks)))
        combined = sum(p.stage == "consolidate" for ps in result for p in ps)
        return result, {"kept": sum(map(len, result)) - combined, "combined": combined}

    def _verify(self, chunks: list[Chunk], pairs: list[list[Pair]]) -> tuple[list[list[Pair]], dict]:
        size = self.settings.verify_batch
        units = [(i, start) for i, ps in enumerate(pairs) for start in range(0, len(ps), size)]
        tally = {"kept": 0, "rewritten": 0, "dropped": 0}
        lock = threading.Lock()

        def one(unit: tuple[int, int]) -> list[Pair]:
            i, start = unit
            chunk, batch = chunks[i], pairs[i][start : start + size]
            reply = self.call(
                "verify", {"document": chunk.document, "passage": chunk.text, "pairs": _numbered(batch)}, _where(chunk)
            )
            verdicts = {v.index: v for v in reply.verdicts}
            kept: list[Pair] = []
            for k, p in enumerate(batch):
                v = verdicts.get(k)
                if v is None or not v.supported:
                    continue
                if v.rewrite is not None:
                    p = Pair(
                        v.rewrite.question.strip(), v.rewrite.answer.strip(), p.document, p.stage, p.chunk, p.entities
                    )
                kept.append(p)
            with lock:
                tally["rewritten"] += sum(
                    1 for v in verdicts.values() if v.supported and v.rewrite is not None and 0 <= v.index < len(batch)
                )
                tally["kept"] += len(kept)
                tally["dropped"] += len(batch) - len(kept)
            return kept

        results = self._stage(3, "verify", one, units)
        verified: list[list[Pair]] = [[] for _ in chunks]
        for (i, _), kept in zip(units, results):
            verified[i] += kept
        return verified, tally

    def _surface(self, chunks: list[Chunk], pairs: list[list[Pair]]) -> list[Pair]:
        def one(i: int) -> list[Pair]:
            chunk = chunks[i]
            reply = self.call("surface", {"document": chunk.document, "pairs": _numbered(pairs[i])}, _where(chunk))
            return [Pair.of(g, chunk, "surface") for g in reply.pairs]

        found = self._stage(4, "surface", one, [i for i, ps in enumerate(pairs) if ps])
        return [p for ps in found for p in ps]

    def _synthesize(self, pairs: list[list[Pair]]) -> list[Pair]:
        by_doc: dict[str, list[Pair]] = {}
        for p in (p for ps in pairs for p in ps):
            by_doc.setdefault(p.document, []).append(p)
        groups = related_groups(
            {d: {e.lower() for p in ps for e in p.entities} for d, ps in by_doc.items()},
            self.settings.group_max_documents,
        )
        share = self.settings.group_max_pairs

        def one(group: tuple[str, ...]) -> list[Pair]:
            per_doc = max(1, share // len(group))
            payload = {"documents": [{"document": d, "pairs": _numbered(by_doc[d][:per_doc])} for d in group]}
            reply = self.call("synthesize", payload, f"documents {', '.join(group)}")
            return [
                Pair(g.question.strip(), g.answer.strip(), group[0], "synthesize", None, tuple(g.entities), group)
                for g in reply.pairs
            ]

        found = self._stage(5, "synthesize", one, groups)
        return [p for ps in found for p in ps]


def related_groups(entities: dict[str, set[str]], max_documents: int) -> list[tuple[str, ...]]:
    """For each document, it and the documents sharing most entities with it; no group twice, none alone."""
    groups: list[tuple[str, ...]] = []
    seen: set[frozenset[str]] = set()
    for anchor in sorted(entities):
        mine = entities[anchor]
        shared = sorted(
            (-len(mine & theirs), other) for other, theirs in entities.items() if other != anchor and mine & theirs
        )
        group = (anchor, *(other for _, other in shared[: max_documents - 1]))
        if len(group) >= 2 and frozenset(group) not in seen:
            seen.add(frozenset(group))
            groups.append(group)
    return groups


def _unique(pairs: list[Pair]) -> list[Pair]:
    """First pair of each question (case and spacing ignored)."""
    seen: set[str] = set()
    out = []
    for p in pairs:
        key = " ".join(p.question.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
