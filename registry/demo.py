"""`memo demo`: the product's journeys end to end on tiny local models, offline.

Today: a home, a tiny base model built and pre-trained on the spot, then
each example corpus registered the way a user would (documents, question-answer
reflections with held-out paraphrases, fine-tuning into a task vector), with
each corpus's recall against the base's, and a full verify. Merging,
publishing and rollback join as they land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.errors import AlreadyExists
from registry.records import BaseModelRecord, CorpusRecord, TaskVectorRecord, VerifyReport
from registry.service import Registry
from training.sft import SFTSettings
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
class CorpusOutcome:
    corpus: CorpusRecord
    task_vector: TaskVectorRecord
    base_recall: float  # exact match of the bare base on the corpus's questions


@dataclass(frozen=True)
class DemoResult:
    home: Path
    base: BaseModelRecord
    corpora: tuple[CorpusOutcome, ...]
    verify: VerifyReport


def run_demo(home: Path, *, corpora: int | None = None, tiny: TinyConfig = TinyConfig(),
             train: SFTSettings | None = None, say: Callable[[str], None] = print,
             progress: bool = True) -> DemoResult:
    with Registry.init(home) as reg:
        if reg.list_bases() or reg.list_corpora():
            raise AlreadyExists(f"{home} already holds a registry; pass another --home or remove it")
        say(f"building a tiny Llama base: a BPE tokenizer trained here, {tiny.pretrain_steps} steps of "
            "pre-training on a separate invented world (offline)")
        base = reg.create_tiny_base("tiny", tiny, progress=progress)
        say(f"registered base model {base.name} ({base.parameter_count} parameters)")
        chosen = list(example_corpora().items())[: corpora or None]
        outcomes = []
        for name, files in chosen:
            outcomes.append(_register(reg, name, files, base, train or SFTSettings(), say, progress))
        report = reg.verify()
        return DemoResult(home=home, base=base, corpora=tuple(outcomes), verify=report)


def _register(reg: Registry, name: str, files: list[Path], base: BaseModelRecord, settings: SFTSettings,
              say: Callable[[str], None], progress: bool) -> CorpusOutcome:
    """One corpus, as `memo register` does it, plus the bare base's recall for comparison."""
    directory = files[0].parent
    corpus = reg.add_corpus(name, files, base=base.name, description="example corpus")
    reg.import_reflections(name, directory / "qa.jsonl", heldout=directory / "heldout.jsonl")
    tv = reg.train(name, settings, progress=progress)
    base_recall = reg.evaluate(str(_base_dir(reg, base)), name)["exact_match"]
    say(f"registered corpus {name}: {len(files)} documents, task vector {tv.ref}, recall "
        f"{tv.metrics['recall']['exact_match']:.2f} (base alone {base_recall:.2f})")
    return CorpusOutcome(corpus=corpus, task_vector=tv, base_recall=base_recall)


def _base_dir(reg: Registry, base: BaseModelRecord) -> Path:
    from registry.schema import BaseModelRow
    from registry.training_ops import base_dir

    with reg.db.read() as session:
        return base_dir(reg.store, reg.settings.home, session.get(BaseModelRow, base.id))
