"""A base's replay set: its own answers to memo's general prompts (``examples/general/prompts.txt``)
and, for a base probed with memo's bank of short questions, its own short answers to the bank's
questions that its probe set does not ask.

Fine-tuning a memory on its corpus alone teaches it that every question is answered with a corpus
fact; mixed with the base's own answers to everyday prompts (self-distillation: the base generates
them, nothing is downloaded), it keeps answering the rest of the world as the base did. Short
questions answered in a few words are the corpus's own form: replaying the base's answers to them
teaches the memory to tell a corpus question from a question about the world by what it asks about,
not by its form. They are never the probe set's questions (those measure what is kept), so a new
probe set makes a new replay set. The answers are made once per base, prompt file and held-back
questions, greedy (so two processes making them at once make the same bytes), and recorded before
any task vector that used them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from registry.operations.bases import base_dir
from registry.operations.examples import examples_dir
from registry.operations.probes import BANK, bank_path, current_probe_set, probes_in
from registry.store.leases import require_stored
from registry.store.schema import BaseModelRow, ReplaySetRow
from registry.store.workspace import Workspace
from training.chat import QAPair
from training.probes import read_probes
from training.qa_files import decode_records, encode_records, pairs_of

REPLAY_TOKENS = 64  # an answer is cut back to its last full sentence within this many tokens
SHORT_TOKENS = 24  # a short answer: a few words, or one sentence
SHORT_REQUEST = " Answer in a few words."  # asked after a held-back bank question (not recorded with it)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def prompts_path() -> Path:
    return examples_dir() / "general" / "prompts.txt"


def everyday_prompts() -> list[str]:
    """memo's general prompts, one a line (what the replay set answers; sparse training scores against them)."""
    return [line.strip() for line in prompts_path().read_text().splitlines() if line.strip()]


def whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end (a reply cut at the token limit would teach stopping mid-way)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else text.strip()


def held_back(ws: Workspace, base: BaseModelRow) -> list[str]:
    """The bank's questions that the base's probe set does not ask, when that set was drawn from the bank
    (none otherwise: a base probed with its own world or the user's files replays the everyday prompts)."""
    with ws.db.read() as session:
        row = current_probe_set(session, base.id)
        if row is None or BANK not in row.source:
            return []
        asked = {p.question for p in probes_in(ws, row)}
    return [p.question for p in read_probes(bank_path()) if p.question not in asked]


@dataclass(frozen=True)
class ReplaySet:
    sha256: str  # the blob of its question-answer records
    pairs: list[QAPair]


def recorded_replay_set(ws: Workspace, base: BaseModelRow) -> str | None:
    """The sha256 of the replay set a training on ``base`` would draw from now, if it is made already
    (None: the next replayed training makes it, so nothing was trained on it yet)."""
    key = _key(prompts_path().read_bytes(), held_back(ws, base))
    with ws.db.read() as session:
        row = _find(session, base.id, key)
        return row.sha256 if row is not None else None


def replay_set(ws: Workspace, base: BaseModelRow, *, device: str) -> ReplaySet:
    """The base's replay set, made (and recorded) on first use: only then is the base itself loaded."""
    data = prompts_path().read_bytes()
    short = held_back(ws, base)
    key = _key(data, short)
    with ws.db.read() as session:
        row = _find(session, base.id, key)
        if row is not None:
            return ReplaySet(row.sha256, pairs_of(decode_records(ws.store.get_bytes(row.sha256))))
    prompts = [line.strip() for line in data.decode().splitlines() if line.strip()]
    from training.sft import load_model  # torch: only when a set is made

    model, tokenizer = load_model(base_dir(ws, base), device)
    records = replay_records(model, tokenizer, prompts, short, device=device)
    sha = ws.store.put_bytes(encode_records(records))
    with ws.db.write() as session:
        if _find(session, base.id, key) is None:  # else another process recorded the same answers meanwhile
            require_stored(session, ws.store, blobs=[sha], what=f"the replay set of base model {base.name!r}")
            session.add(ReplaySetRow(base_model_id=base.id, prompts_sha256=key, pair_count=len(records), sha256=sha))
    return ReplaySet(sha, pairs_of(records))


def replay_records(model, tokenizer, prompts: list[str], short: list[str], *, device: str) -> list[dict]:
    """The model's replies to everyday ``prompts`` (a sentence or three) and its answers in a few words to
    ``short`` questions: the question-answer records of a replay set."""
    records = _answered(model, tokenizer, prompts, REPLAY_TOKENS, device=device)
    return records + _answered(
        model, tokenizer, short, SHORT_TOKENS, request=SHORT_REQUEST, first_line=True, device=device
    )


def _answered(
    model, tokenizer, questions: list[str], tokens: int, *, request: str = "", first_line: bool = False, device: str
) -> list[dict]:
    """The base's greedy answers (``request`` added to each question as asked, not as recorded), cut back
    to whole sentences (of the first line only, if so asked); a question left unanswered is left out."""
    from training.evaluate import generate_answers

    if not questions:
        return []
    answers = generate_answers(model, tokenizer, [q + request for q in questions], max_new_tokens=tokens, device=device)
    records = []
    for question, answer in zip(questions, answers):
        line = answer.strip().split("\n")[0] if first_line else answer
        if text := whole_sentences(line):
            records.append({"question": question, "answer": text})
    return records


def _key(prompts: bytes, short: list[str]) -> str:
    """What a replay set is made from: the prompt file's bytes, and the held-back bank questions if any
    (without them, the file's sha256 alone, as replay sets were always keyed)."""
    digest = hashlib.sha256(prompts)
    if short:
        digest.update(b"\0" + "\n".join(short).encode())
    return digest.hexdigest()


def _find(session, base_id: int, key: str) -> ReplaySetRow | None:
    return session.scalar(
        select(ReplaySetRow).where(ReplaySetRow.base_model_id == base_id, ReplaySetRow.prompts_sha256 == key)
    )
