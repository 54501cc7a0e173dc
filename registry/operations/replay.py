"""A base's replay set: its own answers to memo's general prompts (``examples/general/prompts.txt``).

Fine-tuning a memory on its corpus alone teaches it that every question is answered with a corpus
fact; mixed with the base's own answers to everyday prompts (self-distillation: the base generates
them, nothing is downloaded), it keeps answering the rest of the world as the base did. The answers
are made once per base and prompt file, greedy (so two processes making them at once make the same
bytes), and recorded before any task vector that used them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sqlalchemy import select

from registry.operations.bases import base_dir
from registry.operations.examples import examples_dir
from registry.store.leases import require_stored
from registry.store.schema import BaseModelRow, ReplaySetRow
from registry.store.workspace import Workspace
from training.chat import QAPair
from training.qa_files import decode_records, encode_records, pairs_of

REPLAY_TOKENS = 64  # an answer is cut back to its last full sentence within this many tokens
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def prompts_path() -> Path:
    return examples_dir() / "general" / "prompts.txt"


def whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end (a reply cut at the token limit would teach stopping mid-way)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else text.strip()


def replay_pairs(ws: Workspace, base: BaseModelRow, *, device: str) -> list[QAPair]:
    """The base's replay set, made (and recorded) on first use: only then is the base itself loaded."""
    data = prompts_path().read_bytes()
    key = hashlib.sha256(data).hexdigest()
    with ws.db.read() as session:
        row = _find(session, base.id, key)
        if row is not None:
            return pairs_of(decode_records(ws.store.get_bytes(row.sha256)))
    prompts = [line.strip() for line in data.decode().splitlines() if line.strip()]
    from training.evaluate import generate_answers  # torch: only when a set is made
    from training.sft import load_model

    model, tokenizer = load_model(base_dir(ws, base), device)
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=REPLAY_TOKENS, device=device)
    records = [{"question": p, "answer": a} for p, a in zip(prompts, map(whole_sentences, answers)) if a]
    sha = ws.store.put_bytes(encode_records(records))
    with ws.db.write() as session:
        if _find(session, base.id, key) is None:  # else another process recorded the same answers meanwhile
            require_stored(session, ws.store, blobs=[sha], what=f"the replay set of base model {base.name!r}")
            session.add(ReplaySetRow(base_model_id=base.id, prompts_sha256=key, pair_count=len(records), sha256=sha))
    return pairs_of(records)


def _find(session, base_id: int, key: str) -> ReplaySetRow | None:
    return session.scalar(
        select(ReplaySetRow).where(ReplaySetRow.base_model_id == base_id, ReplaySetRow.prompts_sha256 == key)
    )
