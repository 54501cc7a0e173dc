"""A base's probe sets: the general-knowledge questions it answers itself, asked again of every task
vector's model and every merge (``training.probes``).

A base made by ``memo base create-tiny`` is probed with its own pre-training world's questions; any
other base with a tokenizer and a chat template with memo's bank of short real-world questions
(``examples/general/questions.jsonl``). ``memo base probe`` makes a new set (the bank, the user's own
files, or both); the newest set is the one asked from then on, and every figure names the set it
came from, so figures of different sets are never compared unknowingly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.operations.examples import examples_dir
from registry.store.errors import InvalidInput
from registry.store.records import GeneralKnowledge, ProbeSetRecord
from registry.store.schema import BaseModelRow, ProbeSetRow
from registry.store.workspace import Workspace
from training.probes import Probe, Selection, ask, probes_of, read_probes
from training.qa_files import QAFileError, decode_records, encode_records

BANK = "memo's general-knowledge bank"
TINY_WORLD = "the tiny base's pre-training world"


def bank_path() -> Path:
    return examples_dir() / "general" / "questions.jsonl"


def tiny_world_path() -> Path:
    return examples_dir() / "pretrain" / "qa.jsonl"


def candidates(files: Sequence[Path], *, bank: bool) -> tuple[list[Probe], str]:
    """The questions to ask a base, and a description of where they came from."""
    chosen: list[tuple[Path, str]] = [(bank_path(), BANK)] if bank else []
    chosen += [(Path(f), Path(f).name) for f in files]
    if not chosen:
        raise InvalidInput("no probe questions: give a file of questions, or leave the bank in (drop --no-bank)")
    probes: list[Probe] = []
    for path, _ in chosen:
        try:
            probes += read_probes(path)
        except QAFileError as e:
            raise InvalidInput(str(e)) from e
    unique = list({p.question: p for p in probes}.values())
    return unique, " + ".join(label for _, label in chosen)


def store_probe_set(ws: Workspace, selection: Selection) -> str:
    """The kept probes as a blob (stored before the row that names it)."""
    return ws.store.put_bytes(encode_records([p.to_json() for p in selection.kept]))


def add_probe_set(session: Session, base: BaseModelRow, source: str, selection: Selection, sha: str) -> ProbeSetRow:
    """Record a probe set (its blob ``sha`` stored first); from now on the base's current one."""
    row = ProbeSetRow(
        base_model_id=base.id,
        source=source,
        asked=selection.asked,
        answered=selection.answered,
        probe_count=len(selection.kept),
        sha256=sha,
    )
    session.add(row)
    session.flush()
    return row


def current_probe_set(session: Session, base_id: int) -> ProbeSetRow | None:
    return session.scalar(
        select(ProbeSetRow).where(ProbeSetRow.base_model_id == base_id).order_by(ProbeSetRow.id.desc()).limit(1)
    )


def probe_set_record(row: ProbeSetRow | None) -> ProbeSetRecord | None:
    if row is None:
        return None
    return ProbeSetRecord(row.id, row.source, row.asked, row.answered, row.probe_count, row.sha256, row.created_at)


def probes_in(ws: Workspace, row: ProbeSetRow) -> list[Probe]:
    return probes_of(decode_records(ws.store.get_bytes(row.sha256)))


def measure_general(ws: Workspace, model, tokenizer, row: ProbeSetRow | None, *, device: str) -> dict | None:
    """``GeneralKnowledge`` as stored: the model asked the probe set (None: the base has none, or it is empty)."""
    if row is None or row.probe_count == 0:
        return None
    score = ask(model, tokenizer, probes_in(ws, row), device=device)
    assert score.kept is not None  # the set is not empty
    return GeneralKnowledge(score.kept, score.correct, score.count, row.id).to_json()
