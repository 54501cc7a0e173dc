"""The example corpora that ship with memo (the demo's, the benchmarks', and the tiny base's
pre-training text)."""

from __future__ import annotations

from pathlib import Path


def examples_dir() -> Path:
    package = Path(__file__).resolve().parents[1]  # registry/
    for candidate in (package / "_examples", package.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("memo's example corpora are missing from the installation")


def example_corpora() -> dict[str, list[Path]]:
    """Each example corpus's documents (``qa.jsonl`` / ``heldout.jsonl`` are its questions).

    ``pretrain/`` is a separate world for pre-training the tiny base, not a corpus.
    """
    root = examples_dir()
    return {
        d.name: sorted(d.glob("*.md"))
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name != "pretrain" and (d / "qa.jsonl").is_file()
    }
