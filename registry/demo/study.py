"""The continual-integration study at toy scale: the integration strategies vs retraining as corpora arrive.

For each arriving corpus k (after it is registered, i.e. trained alone into
its task vector), the study builds one model per strategy from every corpus
so far and measures it: recall on each corpus (exact match on its questions
and on its held-out paraphrases), the general knowledge it kept (the base's
probe set asked again, as merges record it: forgetting) and, given questions
about people no corpus holds, how many it answers with an invented fact
(hallucination). The models:

- ``own``: each corpus's own model (its task vector on the base);
- ``ties``: the bare TIES merge (MeMo's setting, density 0.3);
- ``ties+heal``: TIES, then fine-tuned on all member reflections until every
  corpus keeps the target retention (:mod:`registry.operations.integration`);
- ``warm``: the previous ``warm`` model fine-tuned so (its chain lives on
  the study's channel; the first one is the lone corpus's own model). This is
  what `memo merge --channel` does by default (``auto``) as corpora arrive;
- ``retrain``: the base fine-tuned so, from scratch, to the same target;
- ``sequential``: each corpus trained onto the previous ``sequential`` model
  (the first: its own model), every earlier corpus rehearsed, for
  ``sequential_steps`` (1.1x a corpus's own steps by default); served as is
  when every corpus keeps the target, else healed. Its chain lives on a channel
  of its own; it pays these trainings, not each corpus's own;
- ``joint``: MeMo's baseline, the base fine-tuned on every corpus so far for
  as many steps per corpus as a corpus gets alone (not registered).

Compute per arrival, in examples processed (device-independent) and seconds
(training loops, merge engine and retention checks): the merge strategies
pay the new corpus's own training plus their integration; ``retrain`` and
``joint`` pay their run over everything. `memo demo` and
``bench/continual.py`` print it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from registry import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    GeneralKnowledge,
    MergeRecord,
    Registry,
    TaskVectorRecord,
    everyday_prompts,
)
from training.boundary import hallucination
from training.evaluate import recall
from training.settings import REHEARSE_SHARE, RetainSettings, SFTSettings
from training.sft import fine_tune, load_model

METHODS = ("own", *STRATEGIES, "joint")
# The strategy whose model the study's channel serves: what `memo merge --channel` (auto) does as corpora
# arrive: warm start from the channel's model, the first one the lone corpus's own model.
PROMOTED = "warm"
WARM_CHANNEL = "study-warm"  # the warm chain's channel when the study is given none
SEQUENTIAL_CHANNEL = "study-sequential"  # the sequential chain's channel
# A sequential training's steps per step of a corpus's own: measured to K=10 on the tiny base, 1.1x (with the
# healing it then needs) keeps the path's cumulative cost at 1.17x training each corpus alone, 1.2x at 1.25x.
SEQUENTIAL_STEPS = 1.1
# The paths that do not need each corpus trained alone (sequential trains each corpus onto its chain instead).
FROM_SCRATCH = ("retrain", "joint", "sequential")
LABELS = {"own": "own model", **{s.name: s.label for s in STRATEGIES.values()}, "joint": "joint retraining"}
# MeMo (arXiv 2605.15156), 14B memory models on 8xH100: GPU-hours merged vs retrained, accuracy gap.
PAPER_COMPUTE = {2: (48, 72), 10: (240, 1320)}
PAPER_GAP = "11-19 points below full retraining"


@dataclass(frozen=True)
class Score:
    exact: float  # exact match on the corpus's questions
    heldout: float | None  # on its held-out paraphrases (None: it has none)


@dataclass
class Arrival:
    """What the study measured after the k-th corpus arrived."""

    k: int
    corpus: str
    recall: dict[str, dict[str, Score]] = field(default_factory=dict)  # method -> corpus -> score
    general: dict[str, float | None] = field(default_factory=dict)  # method -> general knowledge kept (probe set)
    hallucination: dict[str, float] = field(default_factory=dict)  # method -> share of unknowns answered with a fact
    seconds: dict[str, float] = field(default_factory=dict)  # "alone" and each method: this arrival's cost
    examples: dict[str, int] = field(default_factory=dict)
    merges: dict[str, MergeRecord] = field(default_factory=dict)  # strategy -> its recorded model

    @property
    def merge(self) -> MergeRecord:
        """The model the channel was given (the default strategy's)."""
        return self.merges[PROMOTED]

    def methods(self) -> list[str]:
        return [m for m in METHODS if m in self.recall]

    def mean(self, method: str, which: str = "exact") -> float:
        scores = [getattr(s, which) for s in self.recall[method].values() if getattr(s, which) is not None]
        return sum(scores) / len(scores) if scores else float("nan")

    @classmethod
    def from_json(cls, data: dict, merges: dict[str, MergeRecord]) -> Arrival:
        """An arrival saved by :meth:`to_json`, with its merges' records (``merges``) looked up again."""
        recall = {m: {c: Score(s["exact"], s["heldout"]) for c, s in per.items()} for m, per in data["recall"].items()}
        return cls(
            data["k"],
            data["corpus"],
            recall,
            general=dict(data["general"]),
            hallucination=dict(data["hallucination"]),
            seconds=dict(data["seconds"]),
            examples=dict(data["examples"]),
            merges=merges,
        )

    def to_json(self) -> dict:
        return {
            "k": self.k,
            "corpus": self.corpus,
            "seconds": self.seconds,
            "examples": self.examples,
            "general": self.general,
            "hallucination": self.hallucination,
            "merges": {s: m.ref for s, m in self.merges.items()},
            "recall": {
                m: {c: {"exact": s.exact, "heldout": s.heldout} for c, s in per.items()}
                for m, per in self.recall.items()
            },
        }


def cumulative(arrivals: list[Arrival], method: str) -> list[tuple[float, int]]:
    """(seconds, examples) of the ``method`` path summed up to each arrival.

    A merge strategy's path trains every corpus alone then integrates; the
    from-scratch paths only run over everything at each arrival.
    """
    out, seconds, examples = [], 0.0, 0
    for a in arrivals:
        if method not in FROM_SCRATCH:
            seconds += a.seconds["alone"]
            examples += a.examples["alone"]
        seconds += a.seconds.get(method, 0.0)
        examples += a.examples.get(method, 0)
        out.append((seconds, examples))
    return out


@dataclass(frozen=True)
class Headline:
    """The study's figures at its last arrival, the ones the MeMo paper reports too."""

    k: int
    ties_gap_points: float  # joint retraining's mean recall minus the bare TIES merge's, in points
    kept: dict[str, float]  # trained strategy -> its mean recall as a fraction of joint retraining's
    seconds: tuple[tuple[float, float], ...]  # per arrival: cumulative seconds of (production's path, joint)
    examples: tuple[tuple[int, int], ...] = ()  # per arrival: cumulative examples of (production's path, joint)

    def to_json(self) -> dict:
        return {
            "k": self.k,
            "ties_gap_points": self.ties_gap_points,
            "kept_vs_joint": self.kept,
            "seconds_production_vs_joint": [list(s) for s in self.seconds],
            "examples_production_vs_joint": [list(e) for e in self.examples],
        }


def headline(arrivals: list[Arrival]) -> Headline | None:
    """None when joint retraining was not measured (nothing to compare with)."""
    last = arrivals[-1]
    if "joint" not in last.recall or "ties" not in last.recall:
        return None
    joint = last.mean("joint")
    trained = [m for m in last.recall if m in STRATEGIES and STRATEGIES[m].trained]
    production, retrained = cumulative(arrivals, PROMOTED), cumulative(arrivals, "joint")
    return Headline(
        k=last.k,
        ties_gap_points=(joint - last.mean("ties")) * 100,
        kept={m: last.mean(m) / joint if joint else float("nan") for m in trained},
        seconds=tuple((p[0], j[0]) for p, j in zip(production, retrained)),
        examples=tuple((p[1], j[1]) for p, j in zip(production, retrained)),
    )


def _own_score(tv: TaskVectorRecord) -> Score:
    held = tv.metrics.heldout
    return Score(tv.metrics.recall.exact_match if tv.metrics.recall else 0.0, held.exact_match if held else None)


class Study:
    """Measures one arrival at a time on a registry whose corpora are registered in order.

    ``unknowns``: questions about people no corpus holds, to measure hallucination on (none: not measured).
    """

    def __init__(
        self,
        reg: Registry,
        settings: SFTSettings,
        *,
        unknowns: Sequence[str] = (),
        retain: RetainSettings = RetainSettings(target=0.9),
        strategies: Sequence[str] = tuple(STRATEGIES),
        joint: bool = True,
        sequential_steps: int | None = None,
        rehearse: float = REHEARSE_SHARE,
        device: str = "auto",
        progress: bool = True,
    ):
        self.reg, self.settings, self.retain, self.progress = reg, settings, retain, progress
        steps = sequential_steps or round(settings.steps * SEQUENTIAL_STEPS)
        self.sequential_settings = replace(settings, steps=steps)
        self.rehearse = rehearse  # the earlier corpora's share of each sequential training's examples
        self._chain: dict[str, str] = {}  # corpus -> its task vector in the sequential model
        self.device = Registry.resolve_device(device)
        self.strategies, self.joint = [s for s in STRATEGIES if s in strategies], joint
        self.unknowns = list(unknowns)
        self.arrivals: list[Arrival] = []
        self._own: dict[str, TaskVectorRecord] = {}
        self._own_hallucination: dict[str, float] = {}

    def state(self) -> dict:
        """What :meth:`resume` needs to go on with this study in another process (JSON)."""
        return {
            "own": {c: tv.ref for c, tv in self._own.items()},
            "own_hallucination": dict(self._own_hallucination),
            "arrivals": [a.to_json() for a in self.arrivals],
            "sequential": dict(self._chain),
        }

    def resume(self, state: dict, *, channel: str | None = None) -> list[str]:
        """Go on from a :meth:`state` saved on this registry (a run stopped between or during arrivals).

        Its arrivals count as measured; the warm chain's channel is pointed back at the last one's model,
        since a run stopped during an arrival may have moved it. Returns the corpora that have arrived.
        """
        for corpus, ref in state["own"].items():
            self._own[corpus] = next(tv for tv in self.reg.list_task_vectors(corpus) if tv.ref == ref)
        self._own_hallucination.update(state["own_hallucination"])
        self.arrivals = [
            Arrival.from_json(a, {s: self.reg.get_merge(ref) for s, ref in a["merges"].items()})
            for a in state["arrivals"]
        ]
        self._chain.update(state.get("sequential", {}))
        last = self.arrivals[-1].merges if self.arrivals else {}
        for strategy, chain in ((PROMOTED, channel or WARM_CHANNEL), ("sequential", SEQUENTIAL_CHANNEL)):
            if strategy in last:
                self.reg.promote(last[strategy].id, chain, reason="study resumed")
        return list(self._own)

    @property
    def base(self) -> str:
        """The base model the corpora were registered on."""
        return self.reg.get_corpus(next(iter(self._own))).base_model

    def arrive(self, corpus: str, task_vector: TaskVectorRecord, *, channel: str | None = None) -> Arrival:
        self._own[corpus] = task_vector
        names = list(self._own)
        arrival = Arrival(len(names), corpus)
        arrival.seconds["alone"] = task_vector.cost.train_seconds
        arrival.examples["alone"] = task_vector.cost.examples
        self._measure_own(arrival)
        for strategy in self.strategies:
            record = self._integrate(strategy, names, channel, arrival)
            arrival.merges[strategy] = record
            arrival.seconds[strategy] = arrival.seconds.get(strategy, 0.0) + record.training_cost.seconds
            arrival.examples[strategy] = arrival.examples.get(strategy, 0) + record.training_cost.examples
            self._measure(arrival, strategy, *self._load(record), general=record.general)
        if self.joint:
            self._joint(names, arrival)
        self.arrivals.append(arrival)
        return arrival

    def _measure_own(self, arrival: Arrival) -> None:
        """Each corpus's own model, as registered (recall and general knowledge were recorded then)."""
        arrival.recall["own"] = {c: _own_score(tv) for c, tv in self._own.items()}
        kept = [tv.metrics.general.kept for tv in self._own.values() if tv.metrics.general is not None]
        arrival.general["own"] = sum(kept) / len(kept) if kept else None
        if self.unknowns:
            tv = self._own[arrival.corpus]
            model, tokenizer = load_model(self.reg.model_dir(tv.ref), self.device)
            self._own_hallucination[arrival.corpus] = self._hallucination(model, tokenizer)
            arrival.hallucination["own"] = sum(self._own_hallucination.values()) / len(self._own_hallucination)

    def _integrate(self, strategy: str, names: list[str], channel: str | None, arrival: Arrival) -> MergeRecord:
        reason = f"{arrival.corpus} arrived"
        refs = [self._own[c].ref for c in names]  # each corpus's own task vector (not the sequential ones)
        if strategy == "sequential":
            return self._sequential(arrival)
        if strategy != "warm":
            return self.reg.merge(
                refs, strategy=strategy, retain=self.retain, progress=self.progress, device=self.device
            )
        chain = channel or WARM_CHANNEL  # nothing to start from at K=1: what `memo merge --channel` does (auto)
        return self._chained(refs, "warm" if arrival.k > 1 else DEFAULT_STRATEGY, chain, reason)

    def _chained(self, refs: list[str], strategy: str, chain: str, reason: str) -> MergeRecord:
        """The strategy's model from the chain's current one, then promoted to the chain."""
        record = self.reg.merge(
            refs,
            strategy=strategy,
            retain=self.retain,
            channel=chain,
            progress=self.progress,
            device=self.device,
            promote=False,
        )
        self.reg.promote(record.id, chain, reason=reason)
        return record

    def _sequential(self, arrival: Arrival) -> MergeRecord:
        """The arriving corpus trained onto the chain's model (the first: its own model), then served as the
        chain's members plus it (healed only where one falls short); the training is this arrival's cost."""
        corpus = arrival.corpus
        tv = self._own[corpus]
        if self._chain:
            trained = self.reg.train(
                corpus,
                self.sequential_settings,
                onto=SEQUENTIAL_CHANNEL,
                rehearse=self.rehearse,
                device=self.device,
                progress=self.progress,
                reuse=True,
            )
            assert trained is not None  # a single process
            tv = trained
        arrival.seconds["sequential"] = tv.cost.train_seconds
        arrival.examples["sequential"] = tv.cost.examples
        refs = [ref for c, ref in self._chain.items() if c != corpus] + [tv.ref]
        record = self._chained(refs, "sequential", SEQUENTIAL_CHANNEL, f"{corpus} arrived")
        self._chain[corpus] = tv.ref
        return record

    def _load(self, record: MergeRecord):
        return load_model(self.reg.model_dir(record.ref), self.device)

    def _measure(
        self, arrival: Arrival, method: str, model, tokenizer, *, general: GeneralKnowledge | None = None
    ) -> None:
        """Recall on every corpus so far, general knowledge kept (``general`` when recorded already), and
        hallucination."""
        arrival.recall[method] = self.scores(model, tokenizer, list(self._own))
        if general is None:
            general = self.reg.general_knowledge(model, tokenizer, self.base, device=self.device)
        arrival.general[method] = general.kept if general is not None else None
        if self.unknowns:
            arrival.hallucination[method] = self._hallucination(model, tokenizer)

    def scores(self, model, tokenizer, corpora: list[str]) -> dict[str, Score]:
        """Exact-match recall of a loaded model on each corpus's questions (and held-out paraphrases)."""
        scores = {}
        for c in corpora:
            held = None
            if self._own[c].metrics.heldout is not None:
                held = recall(model, tokenizer, self.reg.questions(c, heldout=True), device=self.device).exact_match
            pairs = self.reg.questions(c)
            scores[c] = Score(recall(model, tokenizer, pairs, device=self.device).exact_match, held)
        return scores

    def _hallucination(self, model, tokenizer) -> float:
        return hallucination(model, tokenizer, self.unknowns, device=self.device)[0]

    def base_hallucination(self) -> float | None:
        """The bare base's hallucination rate on the unknowns (None: no unknowns, or no corpus yet)."""
        if not self.unknowns or not self._own:
            return None
        return self._hallucination(*load_model(self.reg.base_dir(self.base), self.device))

    def _joint(self, corpora: list[str], arrival: Arrival) -> None:
        """Fine-tune the base on every corpus so far (not registered: it is the baseline)."""
        everything = [p for c in corpora for p in self.reg.questions(c)]
        settings = replace(self.settings, steps=self.settings.steps * len(corpora))
        model, tokenizer, result = fine_tune(
            self.reg.base_dir(self.base),
            everything,
            settings,
            everyday=everyday_prompts(),
            device=self.device,
            progress=self.progress,
        )
        arrival.seconds["joint"] = result.seconds
        arrival.examples["joint"] = result.examples
        self._measure(arrival, "joint", model, tokenizer)
