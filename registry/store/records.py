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
    training: dict[str, Any]
    norms: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    reused: bool = False  # an earlier identical training returned instead of training again

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
    recall: dict[str, Any]
    retention: dict[str, Any]
    training_cost: dict[str, Any]
    created_at: datetime
    reused: bool = False  # found by content instead of computed by this call

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
class VerifyReport(Record):
    checked: int
    problems: tuple[BlobProblem, ...] = ()
    unreferenced: tuple[str, ...] = ()  # intact blobs no row reaches (gc candidates)
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GcReport(Record):
    dry_run: bool
    removed: tuple[str, ...] = ()
    bytes_freed: int = 0
    temp_files_removed: int = 0
    kept_recent: int = 0  # unreferenced but younger than the grace period
    work_dirs_removed: int = 0  # left in HOME/tmp by interrupted commands
    cache_entries_removed: int = 0  # rebuildable copies under HOME/cache (only with caches=True)
    extra: dict[str, Any] = field(default_factory=dict)
