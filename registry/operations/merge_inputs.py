"""What a merge takes: its parameters, and the member task vectors resolved from references."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from merging import MergeError, MergeInput, MergeSpec
from merging.methods import DEFAULT_DENSITY, DEFAULT_EPSILON, DEFAULT_GAMMA, METHODS, Method, check_density, check_scale
from registry.operations.task_vectors import find_task_vector
from registry.store.database import row_of
from registry.store.errors import Conflict, InvalidInput
from registry.store.schema import BaseModelRow, CorpusRow, TaskVectorRow


@dataclass(frozen=True)
class MergeParams:
    method: str = "ties"
    density: float = DEFAULT_DENSITY  # MeMo's rho (the methods that thin task vectors)
    lam: float = 1.0
    weights: tuple[tuple[str, float], ...] = ()  # corpus -> weight (default 1.0)
    gamma: float = DEFAULT_GAMMA  # breadcrumbs*
    epsilon: float = DEFAULT_EPSILON  # della*
    rescale: bool | None = None  # None: the method's default
    seed: int = 0  # dare*, della*: the masks' seed

    @property
    def method_def(self) -> Method:
        return METHODS[self.method]

    @property
    def density_used(self) -> float:
        """The density the engine is given: 1 (keep all) for the methods that do not thin."""
        return self.density if self.method_def.trims else 1.0

    def method_parameters(self) -> dict:
        """The method's own settings beyond density and lambda (empty for ties and task arithmetic)."""
        m = self.method_def
        out: dict = {}
        if m.sparsification == "outliers":
            out["gamma"] = self.gamma
        if m.sparsification == "della":
            out["epsilon"] = self.epsilon
        rescale = m.default_rescale if self.rescale is None else self.rescale
        if m.trims and rescale:
            out["rescale"] = True
        if m.random:
            out["seed"] = self.seed
        return out

    def check(self) -> None:
        """Before any work: the same bounds the merge engine holds its inputs to."""
        if self.method not in METHODS:
            raise InvalidInput(f"unknown merge method {self.method!r}; use one of {', '.join(METHODS)}")
        try:
            check_density(self.density, "--density")
            check_scale(self.lam, "--lambda")
            for corpus, weight in self.weights:
                check_scale(weight, f"the weight of {corpus!r}")
            MergeSpec(self.method, Path("base"), (self.engine_input(Path("member"), 1.0),), seed=self.seed)
        except MergeError as e:  # the engine names an input; here it is an option
            message = re.sub(r"the (\w+) of input 0 \(member\)", r"--\1", str(e)).replace("the seed", "--seed")
            raise InvalidInput(message) from e

    def engine_input(self, path: Path, weight: float, **kwargs) -> MergeInput:
        """One member as the engine takes it, with this merge's per-input settings."""
        return MergeInput(
            path, weight=weight, density=self.density_used, gamma=self.gamma, epsilon=self.epsilon, **kwargs
        )


def method_options(options: dict) -> dict:
    """``gamma``, ``epsilon``, ``rescale`` and ``seed`` for :class:`MergeParams`; any other name is an error."""
    unknown = set(options) - {"gamma", "epsilon", "rescale", "seed"}
    if unknown:
        raise InvalidInput(f"unknown merge method options: {', '.join(sorted(unknown))}")
    return {k: v for k, v in options.items() if v is not None}


@dataclass(frozen=True)
class Member:
    row: TaskVectorRow
    corpus: str
    weight: float


def resolve_members(session: Session, refs: list[str], params: MergeParams) -> tuple[BaseModelRow, list[Member]]:
    """The task vector of each ``corpus`` or ``corpus@vN``, in corpus-name order, all on one base."""
    if not refs:
        raise InvalidInput("name at least one corpus to merge, e.g. `memo merge harbor glassworks`")
    weights = dict(params.weights)
    members, seen = [], set()
    for ref in refs:
        row = find_task_vector(session, ref)
        corpus = row_of(session, CorpusRow, row.corpus_id).name
        if corpus in seen:
            raise InvalidInput(f"corpus {corpus!r} is named twice; a merge takes one version of each corpus")
        seen.add(corpus)
        members.append(Member(row, corpus, float(weights.pop(corpus, 1.0))))
    if weights:
        raise InvalidInput(f"--weight names {', '.join(sorted(weights))}, which is not being merged")
    bases = {m.row.base_model_id for m in members}
    if len(bases) > 1:
        names = ", ".join(f"{m.corpus} on {row_of(session, BaseModelRow, m.row.base_model_id).name!r}" for m in members)
        raise Conflict(f"these corpora were trained on different base models ({names}); merge only corpora of one base")
    return row_of(session, BaseModelRow, bases.pop()), sorted(members, key=lambda m: m.corpus)
