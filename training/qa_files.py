"""Question-answer files: JSON lines with ``question`` and ``answer`` (other fields kept)."""

from __future__ import annotations

import json
from pathlib import Path

from training.chat import QAPair
from training.jsonl import json_objects, lines_of, loads

# A question-answer record is a sentence or a paragraph; a line this long is a mistake, and it
# would stall tokenising (the prompt is encoded before it is truncated to the training length).
MAX_RECORD_CHARS = 64 * 1024


class QAFileError(ValueError):
    """A QA file that cannot be used; the message names the file and line."""


def read_qa_file(path: Path, *, documents: set[str] | None = None) -> list[dict]:
    """Validated records of a QA file; ``documents``: names a ``document`` field may reference."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise QAFileError(f"{path}: no such QA file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise QAFileError(f"{path}: cannot read as UTF-8 text ({e})") from e
    records = []
    for lineno, record in json_objects(path, text, QAFileError, max_line_chars=MAX_RECORD_CHARS):
        for key in ("question", "answer"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise QAFileError(f"{path}:{lineno}: needs a non-empty string {key!r}")
        doc = record.get("document")
        if documents is not None and doc is not None and doc not in documents:
            raise QAFileError(f"{path}:{lineno}: references document {doc!r}, which is not in the corpus")
        records.append(record)
    if not records:
        raise QAFileError(f"{path}: the QA file is empty")
    return records


def encode_records(records: list[dict]) -> bytes:
    """Canonical JSON lines: the same pairs always give the same bytes (and blob)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def decode_records(data: bytes) -> list[dict]:
    return [loads(line) for _, line in lines_of(data.decode())]


def pairs_of(records: list[dict]) -> list[QAPair]:
    return [QAPair(r["question"], r["answer"]) for r in records]
