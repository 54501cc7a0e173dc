"""The registry's tables as SQLAlchemy 2.0 typed ORM classes.

Alembic migrations (``alembic/versions``) are the source of schema truth; these
classes mirror them, and ``tests/test_migrations.py`` fails on any drift.
Rows never leave :mod:`registry.store`: they are mapped to the frozen records
of :mod:`registry.store.records` first.

Immutability (a merge and its members, the append-only channel history and
publications) is enforced by database triggers created in the migrations, not
only by Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from registry.store.schema_base import (  # noqa: F401 - the constants and helpers are used from here too
    ENDPOINT_LEN,
    NAME_LEN,
    SHA256_LEN,
    Base,
    UTCDateTime,
    created_column,
    utcnow,
)


class BaseModelRow(Base):
    """A pretrained base that task vectors are measured against."""

    __tablename__ = "base_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    source: Mapped[str] = mapped_column(Text)
    architecture: Mapped[str] = mapped_column(String(NAME_LEN))
    dtype: Mapped[str] = mapped_column(String(32))
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    # sha256 over (name, dtype, shape, bytes) of every tensor: independent of sharding.
    fingerprint: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    # Blob holding the JSON manifest of the model directory's files.
    manifest_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    # Where an imported base came from, e.g. a GGUF file's sha256, name, architecture and quantization.
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The fine-tuning settings chosen for corpora trained on it (SFTSettings fields; each yields to its flag;
    # NULL: memo's own defaults), e.g. training.settings.KEEP_KNOWLEDGE for a base that knows the world.
    training_defaults: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (CheckConstraint("parameter_count >= 0", name="parameter_count_nonnegative"),)


class ProbeSetRow(Base):
    """General-knowledge questions the base answers itself; its newest set is what models made from it
    are asked (``training.probes``)."""

    __tablename__ = "probe_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="RESTRICT"))
    source: Mapped[str] = mapped_column(Text)  # what the candidates were: memo's bank, the tiny world, files
    asked: Mapped[int] = mapped_column(Integer)  # candidates the base was asked
    answered: Mapped[int] = mapped_column(Integer)  # of them, answered correctly
    probe_count: Mapped[int] = mapped_column(Integer)  # of those, kept (a seeded sample up to the limit)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))  # blob: the kept probes as JSON lines
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        CheckConstraint("probe_count >= 0 AND answered >= probe_count AND asked >= answered", name="counts"),
    )


class CorpusRow(Base):
    __tablename__ = "corpus"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = created_column()


class ReplaySetRow(Base):
    """The base's own answers to memo's general prompts (``examples/general/prompts.txt``) and to the bank
    questions its probe set does not ask, mixed into its fine-tunings so that they keep answering as the
    base did; made once per base, prompt file and held-back questions (``registry.operations.replay``)."""

    __tablename__ = "replay_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="RESTRICT"))
    prompts_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))  # what was asked: replay._key
    pair_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))  # blob: question-answer records (JSON lines)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        UniqueConstraint("base_model_id", "prompts_sha256"),
        CheckConstraint("pair_count >= 0", name="pair_count_nonnegative"),
    )


class DocumentRow(Base):
    __tablename__ = "document"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpus.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(1000))
    media_type: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        UniqueConstraint("corpus_id", "name"),
        CheckConstraint("size >= 0", name="size_nonnegative"),
        CheckConstraint("media_type IN ('txt', 'md', 'jsonl')", name="media_type_known"),
    )


class ReflectionSetRow(Base):
    """Question-answer pairs made from (or imported for) a corpus."""

    __tablename__ = "reflection_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpus.id", ondelete="RESTRICT"))
    generator: Mapped[str] = mapped_column(String(500))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pair_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (CheckConstraint("pair_count >= 0", name="pair_count_nonnegative"),)


class TaskVectorRow(Base):
    """Fine-tuned weights minus the base, one version per training run."""

    __tablename__ = "task_vector"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpus.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="RESTRICT"))
    reflection_set_id: Mapped[int | None] = mapped_column(ForeignKey("reflection_set.id", ondelete="RESTRICT"))
    # The merge whose model training started from (trained onto a channel); None: from the base. (No
    # ON DELETE action: merge rows are never deleted, a trigger refuses it.)
    start_merge_id: Mapped[int | None] = mapped_column(ForeignKey("merge.id"))
    method: Mapped[str] = mapped_column(String(32))
    training: Mapped[dict[str, Any]] = mapped_column(default=dict)
    storage_dtype: Mapped[str] = mapped_column(String(32))
    manifest_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    norms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        UniqueConstraint("corpus_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
    )


class MergeRow(Base):
    """One composed model; immutable once written (database triggers)."""

    __tablename__ = "merge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="RESTRICT"))
    strategy: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    engine_version: Mapped[str] = mapped_column(String(64))
    parent_merge_id: Mapped[int | None] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"))
    # How many merge_member rows this merge has; a trigger refuses any more.
    member_count: Mapped[int] = mapped_column(Integer)
    # sha256 of the canonical (members, parameters) description: same inputs, same merge.
    content_key: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    manifest_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    recall: Mapped[dict[str, Any]] = mapped_column(default=dict)
    retention: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The base's probe set asked of the merged model (training.probes.ProbeScore + probe_set id); None: not measured.
    general: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    training_cost: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (CheckConstraint("member_count >= 1", name="member_count_positive"),)


class MergeMemberRow(Base):
    __tablename__ = "merge_member"

    merge_id: Mapped[int] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"), primary_key=True)
    task_vector_id: Mapped[int] = mapped_column(ForeignKey("task_vector.id", ondelete="RESTRICT"), primary_key=True)
    # Order matters: floating-point sums run in config order, as in mergekit.
    position: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("merge_id", "position"),)


class ChannelRow(Base):
    """A named pointer to a merge (e.g. ``production``), optionally linked to a Hub repo."""

    __tablename__ = "channel"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    current_merge_id: Mapped[int | None] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"))
    hub_repo: Mapped[str | None] = mapped_column(String(NAME_LEN))
    hub_endpoint: Mapped[str | None] = mapped_column(String(ENDPOINT_LEN))  # the Hub's URL
    min_retention: Mapped[float | None] = mapped_column(Float)
    min_general: Mapped[float | None] = mapped_column(Float)  # least general knowledge kept a promotion needs
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        CheckConstraint(
            "min_retention IS NULL OR (min_retention >= 0 AND min_retention <= 1)",
            name="min_retention_fraction",
        ),
        CheckConstraint("min_general IS NULL OR (min_general >= 0 AND min_general <= 1)", name="min_general_fraction"),
    )


class ChannelEventRow(Base):
    """Append-only history of a channel (database triggers refuse updates and deletes)."""

    __tablename__ = "channel_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16))
    from_merge_id: Mapped[int | None] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"))
    to_merge_id: Mapped[int | None] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"))
    reason: Mapped[str] = mapped_column(Text, default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        CheckConstraint("action IN ('create', 'promote', 'rollback', 'configure', 'refused')", name="action_known"),
    )


class PublicationRow(Base):
    """A merge pushed to a Hub repo; append-only."""

    __tablename__ = "publication"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merge_id: Mapped[int] = mapped_column(ForeignKey("merge.id", ondelete="RESTRICT"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="RESTRICT"))
    repo_id: Mapped[str] = mapped_column(String(NAME_LEN))
    endpoint: Mapped[str | None] = mapped_column(String(ENDPOINT_LEN))  # the Hub's URL
    revision: Mapped[str] = mapped_column(String(NAME_LEN))
    commit_sha: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str | None] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = created_column()


class GeneratorCallRow(Base):
    """A validated reply of the reflection generator, cached by (prompt version, model, input) hash."""

    __tablename__ = "generator_call"

    cache_key: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(500))
    prompt_version: Mapped[str] = mapped_column(String(64))
    reply_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_column()


class BlobLeaseRow(Base):
    """A running process's claim on the blobs it is storing (:mod:`registry.store.leases`); working
    state, deleted when the process closes the registry or by gc once expired."""

    __tablename__ = "blob_lease"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # osutil.processes.process_key: lets a gc on the same machine see that the holder died.
    holder: Mapped[str] = mapped_column(String(500))
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the database's clock
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (CheckConstraint("ttl_seconds > 0", name="ttl_positive"),)


class BlobLeaseItemRow(Base):
    """One blob under a lease."""

    __tablename__ = "blob_lease_item"

    lease_id: Mapped[str] = mapped_column(ForeignKey("blob_lease.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True, index=True)


class SchemaInfoRow(Base):
    """Facts about the schema: ``memo_version``, the memo that last migrated the database."""

    __tablename__ = "schema_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


# Every column that names a blob directly; manifests name further blobs inside them.
BLOB_COLUMNS = (
    (BaseModelRow, BaseModelRow.manifest_sha256),
    (DocumentRow, DocumentRow.sha256),
    (ReflectionSetRow, ReflectionSetRow.sha256),
    (ProbeSetRow, ProbeSetRow.sha256),
    (ReplaySetRow, ReplaySetRow.sha256),
    (TaskVectorRow, TaskVectorRow.manifest_sha256),
    (MergeRow, MergeRow.manifest_sha256),
    (GeneratorCallRow, GeneratorCallRow.reply_sha256),
)


# Tables kept in modules of their own, imported here so that they are on Base's metadata.
from registry.store.webhook_schema import ChannelWebhookRow, WebhookDeliveryRow  # noqa: E402, F401
