"""The continual-integration study at toy scale: merge vs joint retraining as corpora arrive.

For each arriving corpus k (after it is registered, i.e. trained alone into
its task vector), the study measures recall on every corpus so far (exact
match on its questions and on its held-out paraphrases) of:

- ``own``: each corpus's own model (its task vector on the base);
- ``ties``: the TIES merge of all task vectors so far (MeMo's setting, density 0.3);
- ``task_arithmetic``: their scaled sum (lambda 0.5, the best measured in METHOD.md);
- ``joint``: a model fine-tuned from the base on every corpus so far (MeMo's
  baseline), with as many steps per corpus as a corpus gets alone.

and the compute each path costs (seconds of the training loops, the same
measure on both sides, plus the merge's wall time; and examples processed): "train each new corpus alone + merge" grows
by one corpus's training per arrival, "retrain on everything" by a run over
all corpora so far. `memo demo` and ``bench/continual.py`` print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.evaluation import qa_pairs
from registry.records import MergeRecord, TaskVectorRecord
from registry.service import Registry
from training.sft import SFTSettings

METHODS = ("own", "ties", "task_arithmetic", "joint")
TASK_ARITHMETIC_LAMBDA = 0.5


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
    seconds: dict[str, float] = field(default_factory=dict)  # alone, merge, joint (this arrival's cost)
    examples: dict[str, int] = field(default_factory=dict)  # alone, joint (examples processed)
    merge: MergeRecord | None = None

    def mean(self, method: str, which: str = "exact") -> float:
        scores = [getattr(s, which) for s in self.recall[method].values() if getattr(s, which) is not None]
        return sum(scores) / len(scores) if scores else float("nan")

    def to_json(self) -> dict:
        return {"k": self.k, "corpus": self.corpus, "seconds": self.seconds, "examples": self.examples,
                "merge": self.merge.ref if self.merge else None,
                "recall": {m: {c: {"exact": s.exact, "heldout": s.heldout} for c, s in per.items()}
                           for m, per in self.recall.items()}}


def cumulative(arrivals: list[Arrival]) -> list[tuple[float, float]]:
    """(alone + merge, retrain on everything) wall seconds summed up to each arrival."""
    out, alone, joint = [], 0.0, 0.0
    for a in arrivals:
        alone += a.seconds["alone"] + a.seconds["merge"]
        joint += a.seconds["joint"]
        out.append((alone, joint))
    return out


class Study:
    """Measures one arrival at a time on a registry whose corpora are registered in order."""

    def __init__(self, reg: Registry, settings: SFTSettings, *, device: str = "auto", progress: bool = True):
        self.reg, self.settings, self.device, self.progress = reg, settings, device, progress
        self.arrivals: list[Arrival] = []
        self._own: dict[str, TaskVectorRecord] = {}

    def arrive(self, corpus: str, task_vector: TaskVectorRecord, *, channel: str | None = None) -> Arrival:
        self._own[corpus] = task_vector
        names = list(self._own)
        arrival = Arrival(len(names), corpus)
        arrival.seconds["alone"] = task_vector.training["train_seconds"]
        arrival.examples["alone"] = task_vector.training["examples"]
        arrival.recall["own"] = {c: Score(tv.metrics["recall"]["exact_match"],
                                          tv.metrics.get("heldout", {}).get("exact_match"))
                                 for c, tv in self._own.items()}
        arrival.merge = self.reg.merge(names, channel=channel, progress=self.progress, device=self.device,
                                       reason=f"{corpus} arrived" if channel else "")
        # The merge alone: its retention evaluation is bookkeeping, like the evaluation of joint retraining.
        arrival.seconds["merge"] = arrival.merge.training_cost.get("merge_seconds", 0.0)
        arrival.recall["ties"] = self.scores(arrival.merge.ref, names)
        arithmetic = self.reg.merge(names, method="task_arithmetic", lam=TASK_ARITHMETIC_LAMBDA, progress=False,
                                     evaluate=False)  # scored below, held-out included
        arrival.recall["task_arithmetic"] = self.scores(arithmetic.ref, names)
        arrival.recall["joint"] = self._joint(names, arrival)
        self.arrivals.append(arrival)
        return arrival

    def scores(self, ref: str, corpora: list[str]) -> dict[str, Score]:
        return {c: Score(self.reg.evaluate(ref, c, device=self.device)["exact_match"], self._heldout(ref, c))
                for c in corpora}

    def _heldout(self, ref: str, corpus: str) -> float | None:
        if self._own[corpus].metrics.get("heldout") is None:
            return None
        return self.reg.evaluate(ref, corpus, heldout=True, device=self.device)["exact_match"]

    def _joint(self, corpora: list[str], arrival: Arrival) -> dict[str, Score]:
        """Fine-tune the base on every corpus so far (not registered: it is the baseline)."""
        from dataclasses import replace

        from registry.training_ops import device_for
        from training.evaluate import recall
        from training.sft import fine_tune

        pairs = {c: qa_pairs(self.reg.db, self.reg.store, c) for c in corpora}
        everything = [p for c in corpora for p in pairs[c]]
        settings = replace(self.settings, steps=self.settings.steps * len(corpora))
        device = device_for(self.device)
        model, tokenizer, result = fine_tune(self.reg.base_dir(self.reg.get_corpus(corpora[0]).base_model),
                                             everything, settings, device=device, progress=self.progress)
        arrival.seconds["joint"] = result.seconds
        arrival.examples["joint"] = result.examples
        out = {}
        for c in corpora:
            held = None
            if self._own[c].metrics.get("heldout") is not None:
                held = recall(model, tokenizer, qa_pairs(self.reg.db, self.reg.store, c, heldout=True),
                              device=device).exact_match
            out[c] = Score(recall(model, tokenizer, pairs[c], device=device).exact_match, held)
        return out
