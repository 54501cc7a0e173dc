"""`memo demo`: the product's journeys end to end on tiny local models, offline.

A home, a tiny base model built and pre-trained on the spot, then each
example corpus registered the way a user would (documents, question-answer
reflections with held-out paraphrases, fine-tuning into a task vector). After
each registration every corpus so far is integrated with each strategy (bare
TIES, TIES + heal, warm start, retraining); the warm-start chain, which is
what ``memo merge --channel production`` does by default as corpora arrive,
is the ``production`` channel, which publishes to a Hub (a local one started
for the run, or a real repo). At the end production rolls back
one step, and the continual-integration study (:mod:`registry.demo.study`) is
printed and plotted: each strategy vs joint retraining, recall, forgetting
and compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import (
    AlreadyExists,
    BaseModelRecord,
    ChannelEventRecord,
    CorpusRecord,
    ProbeSetRecord,
    PublicationRecord,
    Registry,
    TaskVectorRecord,
    VerifyReport,
    default_endpoint,
    example_corpora,
)
from registry.demo.local_hub import local_hub
from registry.demo.plots import plot_continual
from registry.demo.study import Arrival, Headline, Study, cumulative, headline
from registry.demo.unknowns import unknown_questions
from training.settings import SFTSettings, TinyConfig


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
    arrivals: tuple[Arrival, ...]
    probes: ProbeSetRecord | None  # the base's probe set: what "general knowledge kept" asks again
    base_hallucination: float | None  # the bare base on questions about people no corpus holds
    publications: tuple[PublicationRecord, ...]
    log: tuple[ChannelEventRecord, ...]
    hub: str  # where production was published ("local Hub at URL" or the real Hub's URL)
    plot: Path
    verify: VerifyReport

    @property
    def headline(self) -> Headline | None:
        return headline(list(self.arrivals))

    def to_json(self) -> dict:
        arrivals = list(self.arrivals)
        return {
            "home": str(self.home),
            "base": self.base.to_json(),
            "hub": self.hub,
            "plot": str(self.plot),
            "corpora": [
                {"corpus": o.corpus.name, "task_vector": o.task_vector.ref, "base_recall": o.base_recall}
                for o in self.corpora
            ],
            "arrivals": [a.to_json() for a in arrivals],
            "probes": self.probes.to_json() if self.probes else None,
            "base_hallucination": self.base_hallucination,
            "cumulative": {
                m: [{"seconds": s, "examples": e} for s, e in cumulative(arrivals, m)]
                for m in arrivals[-1].methods()
                if m != "own"
            },
            "headline": self.headline.to_json() if self.headline else None,
            "log": [e.to_json() for e in self.log],
            "publications": [p.to_json() for p in self.publications],
            "verify": {"checked": self.verify.checked, "problems": len(self.verify.problems)},
        }


CHANNEL = "production"


def run_demo(
    home: Path,
    *,
    base: Path | None = None,
    corpora: int | None = None,
    tiny: TinyConfig = TinyConfig(),
    train: Mapping[str, Any] | None = None,
    repo: str | None = None,
    device: str = "auto",
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """The journeys end to end: base, then per corpus register + merge + publish; a rollback; the study.

    ``base``: a GGUF file or model directory to import as the base instead of building the tiny one.
    ``train``: fine-tuning settings chosen over the base's training defaults (``Registry.training_settings``).
    Publishes to a Hub-compatible server started on 127.0.0.1 for the run,
    or with ``repo`` to that repo on the real Hub (``HF_TOKEN``, ``HF_ENDPOINT``).
    """
    with Registry.init(home) as reg:
        if reg.list_bases() or reg.list_corpora():
            raise AlreadyExists(f"{home} already holds a registry; pass another --home or remove it")
        made = _base(reg, base, tiny, device, say, progress)
        settings = reg.training_settings(made.name, **(train or {}))
        chosen = list(example_corpora().items())[: corpora or None]
        with _hub(repo) as (repo_id, endpoint, where):
            reg.link_channel(CHANNEL, repo_id, endpoint=endpoint)
            say(f"channel {CHANNEL} publishes to {repo_id} on {where}")
            study = Study(reg, settings, unknowns=unknown_questions(), device=device, progress=progress)
            outcomes = [
                _arrive(reg, study, name, files, made, settings, device, say, progress) for name, files in chosen
            ]
            if len(study.arrivals) > 1:
                event = reg.rollback(CHANNEL, reason="demo: roll back one step")
                say(
                    f"rolled {CHANNEL} back: merge-{event.from_merge_id} -> merge-{event.to_merge_id} "
                    "(published as a new commit)"
                )
            publications = tuple(reg.publications())
        plot = plot_continual(
            study.arrivals,
            home / "continual.png",
            title=f"memo demo: {len(chosen)} corpora on a {made.parameter_count / 1e6:.1f}M base",
        )
        return DemoResult(
            home=home,
            base=made,
            corpora=tuple(outcomes),
            arrivals=tuple(study.arrivals),
            probes=reg.get_base(made.name).probes,
            base_hallucination=study.base_hallucination(),
            publications=publications,
            log=tuple(reg.log(CHANNEL)),
            hub=where,
            plot=plot,
            verify=reg.verify(),
        )


def _base(
    reg: Registry, path: Path | None, tiny: TinyConfig, device: str, say: Callable[[str], None], progress: bool
) -> BaseModelRecord:
    """The tiny base built here, or ``path`` imported (and probed) as the base."""
    if path is not None:
        say(f"importing {path.name} as the base (a GGUF file is dequantized) and asking it memo's probe questions")
        made = reg.add_base(path, device=device)
    else:
        say(
            f"building a tiny Llama base: a BPE tokenizer trained here, {tiny.pretrain_steps} steps of "
            "pre-training on a separate invented world (offline)"
        )
        made = reg.create_tiny_base("tiny", tiny, progress=progress)
    probes = reg.get_base(made.name).probes
    kept = f"; it answers {probes.probe_count} probe questions" if probes else ""
    say(f"registered base model {made.name} ({made.parameter_count} parameters{kept})")
    return made


def _arrive(reg, study, name, files, base, settings, device, say, progress) -> CorpusOutcome:
    """A corpus arrives: registered, then integrated with every strategy so far (production moves)."""
    outcome = _register(reg, name, files, base, settings, device, say, progress)
    arrival = study.arrive(name, outcome.task_vector, channel=CHANNEL)
    say(
        f"integrated {arrival.k} corpora: {arrival.merge.ref} ({arrival.merge.strategy}, "
        f"{arrival.examples['warm']} examples) promoted to {CHANNEL} and published; mean recall: "
        + ", ".join(f"{m} {arrival.mean(m):.2f}" for m in arrival.methods())
    )
    return outcome


@contextmanager
def _hub(repo: str | None) -> Iterator[tuple[str, str | None, str]]:
    """(repo id, endpoint, description): a local Hub for the run, or the real one with ``repo``."""
    if repo is not None:
        yield repo, None, default_endpoint()
        return
    with local_hub() as hub:
        yield "memo-demo/production", hub.url, f"a local Hub at {hub.url} (in memory, for this run)"


def _register(
    reg: Registry,
    name: str,
    files: list[Path],
    base: BaseModelRecord,
    settings: SFTSettings,
    device: str,
    say: Callable[[str], None],
    progress: bool,
) -> CorpusOutcome:
    """One corpus, as `memo register` does it, plus the bare base's recall for comparison."""
    directory = files[0].parent
    corpus = reg.add_corpus(name, files, base=base.name, description="example corpus")
    reg.import_reflections(name, directory / "qa.jsonl", heldout=directory / "heldout.jsonl")
    tv = reg.train(name, settings, device=device, progress=progress)
    assert tv is not None  # one process: it records the task vector
    base_recall = reg.evaluate(str(reg.base_dir(base.name)), name, device=device).exact_match
    say(
        f"registered corpus {name}: {len(files)} documents, task vector {tv.ref}, recall "
        f"{tv.metrics.recall.exact_match if tv.metrics.recall else 0:.2f} (base alone {base_recall:.2f})"
    )
    return CorpusOutcome(corpus=corpus, task_vector=tv, base_recall=base_recall)
