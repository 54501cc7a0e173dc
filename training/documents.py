"""Reading a corpus's documents: plain text, markdown, or JSON lines.

Validation happens before anything is stored, with the file (and line) named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.jsonl import json_objects, lines_of, loads

MEDIA_TYPES = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".jsonl": "jsonl"}


class DocumentError(ValueError):
    """A document that cannot be read as one of the supported kinds."""


@dataclass(frozen=True)
class DocumentFile:
    path: Path
    name: str  # the name it is stored under inside its corpus
    media_type: str  # "txt", "md" or "jsonl"
    size: int


def _media_type(path: Path) -> str:
    media = MEDIA_TYPES.get(path.suffix.lower())
    if media is None:
        known = ", ".join(sorted(set(MEDIA_TYPES)))
        raise DocumentError(f"{path}: unsupported document type {path.suffix!r} (use {known})")
    return media


def inspect_document(path: Path) -> DocumentFile:
    """Check that a document exists, is readable UTF-8 and parses as its kind."""
    path = Path(path)
    media = _media_type(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DocumentError(f"{path}: no such document") from e
    except IsADirectoryError as e:
        raise DocumentError(f"{path}: is a directory, not a document") from e
    except OSError as e:
        raise DocumentError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"{path}: not UTF-8 text (byte {e.start}); re-encode it as UTF-8") from e
    if not text.strip():
        raise DocumentError(f"{path}: the document is empty")
    if media == "jsonl":
        for _ in json_objects(path, text, DocumentError):
            pass
    return DocumentFile(path=path, name=path.name, media_type=media, size=len(raw))


def inspect_documents(paths: list[Path]) -> list[DocumentFile]:
    docs = [inspect_document(p) for p in paths]
    seen: dict[str, Path] = {}
    for doc in docs:
        if doc.name in seen:
            raise DocumentError(f"two documents are named {doc.name!r} ({seen[doc.name]} and {doc.path}); rename one")
        seen[doc.name] = doc.path
    return docs


def document_text(media_type: str, raw: bytes) -> str:
    """The text a generator reads: the file itself, or for JSON lines each object's ``text`` (or itself)."""
    text = raw.decode("utf-8")
    if media_type != "jsonl":
        return text
    parts = []
    for _, line in lines_of(text):
        value = loads(line)
        parts.append(value["text"] if isinstance(value.get("text"), str) else json.dumps(value, ensure_ascii=False))
    return "\n\n".join(parts)
