"""`memo demo`: the product's journeys end to end on tiny local models, offline.

Today it runs the foundation: a home, a tiny base model built and
pre-trained on the spot, the example corpora registered, listings and a full
verify. Training,
merging, publishing and rollback join as they land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.errors import AlreadyExists
from registry.records import BaseModelRecord, CorpusRecord, VerifyReport
from registry.service import Registry
from training.tiny import TinyConfig


def examples_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples", here.parent / "examples"):
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
        for d in sorted(root.iterdir()) if d.is_dir() and d.name != "pretrain" and (d / "qa.jsonl").is_file()
    }


@dataclass(frozen=True)
class DemoResult:
    home: Path
    base: BaseModelRecord
    corpora: tuple[CorpusRecord, ...]
    verify: VerifyReport


def run_demo(home: Path, *, corpora: int | None = None, tiny: TinyConfig = TinyConfig(),
             say: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    from training.tiny import create_tiny_base

    with Registry.init(home) as reg:
        if reg.list_bases() or reg.list_corpora():
            raise AlreadyExists(f"{home} already holds a registry; pass another --home or remove it")
        say(f"building a tiny Llama base: a BPE tokenizer trained here, {tiny.pretrain_steps} steps of "
            "pre-training on a separate invented world (offline)")
        base_dir, _ = create_tiny_base(home / "work" / "tiny-base", pretrain_dir=examples_dir() / "pretrain",
                                       config=tiny, progress=progress)
        base = reg.add_base(base_dir, name="tiny")
        say(f"registered base model {base.name} ({base.parameter_count} parameters)")
        chosen = list(example_corpora().items())[: corpora or None]
        records = []
        for name, files in chosen:
            records.append(reg.add_corpus(name, files, base=base.name, description="example corpus"))
            say(f"registered corpus {name} ({len(files)} documents)")
        report = reg.verify()
        return DemoResult(home=home, base=base, corpora=tuple(records), verify=report)
