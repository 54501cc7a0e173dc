"""`memo demo`: the product's journeys end to end on tiny local models, offline.

Today it runs the foundation: a home, a tiny base model built on the spot,
the example corpora registered, listings and a full verify. Training,
merging, publishing and rollback join as they land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.errors import AlreadyExists
from registry.records import BaseModelRecord, CorpusRecord, VerifyReport
from registry.service import Registry


def examples_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples", here.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("memo's example corpora are missing from the installation")


def example_corpora() -> dict[str, list[Path]]:
    root = examples_dir()
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix in {".md", ".txt", ".jsonl"})
        for d in sorted(root.iterdir()) if d.is_dir()
    }


@dataclass(frozen=True)
class DemoResult:
    home: Path
    base: BaseModelRecord
    corpora: tuple[CorpusRecord, ...]
    verify: VerifyReport


def run_demo(home: Path, *, corpora: int | None = None, seed: int = 0,
             say: Callable[[str], None] = print) -> DemoResult:
    from training.tiny import create_tiny_base

    with Registry.init(home) as reg:
        if reg.list_bases() or reg.list_corpora():
            raise AlreadyExists(f"{home} already holds a registry; pass another --home or remove it")
        say("building a tiny Llama base model (random init, offline)")
        base_dir = create_tiny_base(home / "work" / "tiny-base", seed=seed)
        base = reg.add_base(base_dir, name="tiny")
        say(f"registered base model {base.name} ({base.parameter_count} parameters)")
        chosen = list(example_corpora().items())[: corpora or None]
        records = []
        for name, files in chosen:
            records.append(reg.add_corpus(name, files, base=base.name, description="example corpus"))
            say(f"registered corpus {name} ({len(files)} documents)")
        report = reg.verify()
        return DemoResult(home=home, base=base, corpora=tuple(records), verify=report)
