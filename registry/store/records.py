"""Frozen records: what the registry hands out. ORM rows never leave the store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class Record:
    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]


def _number(data: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key)
    return default if value is None else float(value)


@dataclass(frozen=True)
class Recall(Record):
    """A model asked a corpus's questions: exact match and token F1 over ``count`` questions."""

    exact_match: float
    f1: float
    count: int

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Recall | None:
        if not data:
            return None
        return cls(float(data["exact_match"]), _number(data, "f1"), int(data.get("count", 0)))


@dataclass(frozen=True)
class MemberRecall(Recall):
    """A merge asked a member corpus's questions, beside that corpus's own model (``own``)."""

    own: float | None = None

    @classmethod
    def of_member(cls, data: dict[str, Any]) -> MemberRecall:
        own = data.get("own")
        return cls(float(data["exact_match"]), _number(data, "f1"), int(data.get("count", 0)), own)


@dataclass(frozen=True)
class GeneralKnowledge(Record):
    """A model asked its base's probe set (``training.probes``): ``kept`` = correct / count, 1.0 for the base."""

    kept: float
    correct: int
    count: int
    probe_set: int  # the probe set's id

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> GeneralKnowledge | None:
        if not data or data.get("kept") is None:
            return None
        return cls(float(data["kept"]), int(data["correct"]), int(data["count"]), int(data["probe_set"]))


@dataclass(frozen=True)
class TaskVectorMetrics(Record):
    """The trained model's recall on its reflections and on their held-out paraphrases, and the general
    knowledge of its base it kept."""

    recall: Recall | None = None
    heldout: Recall | None = None
    general: GeneralKnowledge | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskVectorMetrics:
        return cls(
            Recall.from_json(data.get("recall")),
            Recall.from_json(data.get("heldout")),
            GeneralKnowledge.from_json(data.get("general")),
        )


@dataclass(frozen=True)
class TrainingCost(Record):
    """What training a corpus into its task vector took."""

    examples: int = 0
    steps: int = 0
    train_seconds: float = 0.0  # the training loop
    wall_seconds: float = 0.0  # the whole command: loading, training, evaluating, storing

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingCost:
        return cls(
            int(data.get("examples", 0)),
            int(data.get("steps", 0)),
            _number(data, "train_seconds"),
            _number(data, "wall_seconds"),
        )


@dataclass(frozen=True)
class RetainOutcome(Record):
    """How a trained strategy's fine-tuning went: steps, whether every member reached the target,
    and each retention check (``{"step", "retention": {corpus: value}}``)."""

    steps: int
    examples: int
    reached: bool
    checks: tuple[dict[str, Any], ...] = ()
    replay_set: str | None = None  # the sha256 of the base's replay set drawn from (None: no replay)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RetainOutcome | None:
        if not data:
            return None
        checks = tuple(data.get("checks", ()))
        steps, examples, reached = int(data.get("steps", 0)), int(data.get("examples", 0)), bool(data.get("reached"))
        return cls(steps, examples, reached, checks, data.get("replay_set"))


@dataclass(frozen=True)
class MergeCost(Record):
    """What making a merge took: the merge engine, training (trained strategies) and the retention checks."""

    merge_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    train_seconds: float = 0.0
    check_seconds: float = 0.0
    examples: int = 0
    steps: int = 0
    retain: RetainOutcome | None = None  # trained strategies only
    kernel: str = ""  # the merge engine's kernel (fused C, torch, ...); empty for merges recorded before

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MergeCost:
        return cls(
            merge_seconds=_number(data, "merge_seconds"),
            evaluation_seconds=_number(data, "evaluation_seconds"),
            train_seconds=_number(data, "train_seconds"),
            check_seconds=_number(data, "check_seconds"),
            examples=int(data.get("examples", 0)),
            steps=int(data.get("steps", 0)),
            retain=RetainOutcome.from_json(data.get("retain")),
            kernel=str(data.get("kernel", "")),
        )

    @property
    def seconds(self) -> float:
        return self.merge_seconds + self.train_seconds + self.check_seconds


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """`memo eval`: a model's recall on a corpus's reflections or held-out set."""

    ref: str
    corpus: str
    set: str  # "reflections" or "heldout"
    exact_match: float
    f1: float
    count: int


@dataclass(frozen=True)
class ExecutiveEvaluationRecord(Record):
    """`memo eval --executive-url`: executive + memory on a corpus's questions, and each question's trace."""

    corpus: str
    set: str  # "reflections" or "heldout"
    count: int
    exact_match: float
    f1: float
    executive_calls: float  # per question
    judge: float | None  # the LLM judge's share of correct answers (None: not asked)
    questions: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class BaseModelRecord(Record):
    id: int
    name: str
    source: str
    architecture: str
    dtype: str
    parameter_count: int
    fingerprint: str
    manifest_sha256: str
    created_at: datetime
    origin: dict[str, Any] | None = None  # an imported base's source file (``training.gguf_import.GGUFSource``)
    training_defaults: dict[str, Any] | None = None  # fine-tuning settings its corpora get unless a flag says
    probes: ProbeSetRecord | None = None  # the newest probe set: what "general knowledge kept" asks


@dataclass(frozen=True)
class ProbeSetRecord(Record):
    id: int
    source: str
    asked: int
    answered: int
    probe_count: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class DocumentRecord(Record):
    name: str
    media_type: str
    sha256: str
    size: int


@dataclass(frozen=True)
class CorpusRecord(Record):
    id: int
    name: str
    description: str
    base_model: str
    created_at: datetime
    documents: tuple[DocumentRecord, ...] = ()
    task_vector_count: int = 0
    latest_version: int | None = None

    @property
    def total_size(self) -> int:
        return sum(d.size for d in self.documents)


@dataclass(frozen=True)
class ReflectionSetRecord(Record):
    id: int
    corpus: str
    generator: str
    pair_count: int
    sha256: str
    heldout_sha256: str | None
    settings: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class TaskVectorRecord(Record):
    id: int
    corpus: str
    version: int
    base_model: str
    method: str
    storage_dtype: str
    manifest_sha256: str
    training: dict[str, Any]  # provenance: settings, dataset, software versions, cost
    norms: dict[str, Any]
    metrics: TaskVectorMetrics
    created_at: datetime
    reused: bool = False  # an earlier identical training returned instead of training again
    trained_onto: str | None = None  # "merge-N": training started from that merge's model (None: the base)

    @property
    def cost(self) -> TrainingCost:
        return TrainingCost.from_json(self.training)

    @property
    def ref(self) -> str:
        return f"{self.corpus}@v{self.version}"


@dataclass(frozen=True)
class MergeMemberRecord(Record):
    corpus: str
    version: int
    task_vector_id: int
    weight: float
    density: float

    @property
    def ref(self) -> str:
        return f"{self.corpus}@v{self.version}"


@dataclass(frozen=True)
class MergeRecord(Record):
    id: int
    base_model: str
    strategy: str
    method: str
    parameters: dict[str, Any]
    engine_version: str
    parent_merge_id: int | None
    content_key: str
    manifest_sha256: str
    members: tuple[MergeMemberRecord, ...]
    recall: dict[str, MemberRecall]  # member corpus -> the merge's recall on its questions
    retention: dict[str, float | None]  # member corpus -> merged recall / own recall (None: no own figure)
    training_cost: MergeCost
    created_at: datetime
    reused: bool = False  # found by content instead of computed by this call
    general: GeneralKnowledge | None = None  # the base's probe set asked of the merged model

    @property
    def lowest_retention(self) -> float | None:
        values = [v for v in self.retention.values() if v is not None]
        return min(values) if values else None

    @property
    def ref(self) -> str:
        return f"merge-{self.id}"

    @property
    def corpora(self) -> str:
        return " ".join(m.ref for m in self.members)


@dataclass(frozen=True)
class ChannelRecord(Record):
    id: int
    name: str
    current_merge_id: int | None
    hub_repo: str | None
    hub_endpoint: str | None
    min_retention: float | None
    created_at: datetime
    min_general: float | None = None


@dataclass(frozen=True)
class PublicationRecord(Record):
    id: int
    merge_id: int
    channel: str | None
    repo_id: str
    endpoint: str | None
    revision: str
    commit_sha: str
    tag: str | None
    created_at: datetime


@dataclass(frozen=True)
class ChannelEventRecord(Record):
    id: int
    channel: str
    action: str
    from_merge_id: int | None
    to_merge_id: int | None
    reason: str
    forced: bool
    created_at: datetime


@dataclass(frozen=True)
class BlobProblem(Record):
    sha256: str
    problem: str  # "missing" or "corrupt (...)"
    referenced_by: str  # e.g. "document books/a.md of corpus x"


@dataclass(frozen=True)
class CacheProblem(Record):
    entry: str  # e.g. "models/0a1b..." under HOME/cache
    problem: str  # e.g. "model.safetensors fails its sha256"


@dataclass(frozen=True)
class VerifyReport(Record):
    checked: int
    problems: tuple[BlobProblem, ...] = ()
    unreferenced: tuple[str, ...] = ()  # intact blobs no row reaches (gc candidates)
    temp_files: int = 0
    cache_checked: int = 0  # entries under HOME/cache rehashed against their records
    cache_problems: tuple[CacheProblem, ...] = ()  # damaged copies, removed (rebuilt at their next use)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.cache_problems


@dataclass(frozen=True)
class GcReport(Record):
    dry_run: bool
    removed: tuple[str, ...] = ()
    bytes_freed: int = 0
    temp_files_removed: int = 0
    kept_recent: int = 0  # unreferenced but younger than the grace period
    kept_leased: int = 0  # unreferenced, but claimed by a running command that has not recorded it yet
    work_dirs_removed: int = 0  # left in HOME/tmp by interrupted commands
    cache_entries_removed: int = 0  # rebuildable copies under HOME/cache (only with caches=True)
    extra: dict[str, Any] = field(default_factory=dict)
