"""What a merge takes: its parameters, and the member task vectors resolved from references."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from merging import MergeError
from merging.spec import DEFAULT_DENSITY, METHODS, check_density, check_scale
from registry.operations.task_vectors import find_task_vector
from registry.store.database import row_of
from registry.store.errors import Conflict, InvalidInput
from registry.store.schema import BaseModelRow, CorpusRow, TaskVectorRow


@dataclass(frozen=True)
class MergeParams:
    method: str = "ties"
    density: float = DEFAULT_DENSITY  # MeMo's rho (ties only)
    lam: float = 1.0
    weights: tuple[tuple[str, float], ...] = ()  # corpus -> weight (default 1.0)

    def check(self) -> None:
        """Before any work: the same bounds the merge engine holds its inputs to."""
        if self.method not in METHODS:
            raise InvalidInput(f"unknown merge method {self.method!r}; use one of {', '.join(METHODS)}")
        try:
            check_density(self.density, "--density")
            check_scale(self.lam, "--lambda")
            for corpus, weight in self.weights:
                check_scale(weight, f"the weight of {corpus!r}")
        except MergeError as e:
            raise InvalidInput(str(e)) from e


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
