"""memo's registry: what exists (SQL rows, content-addressed blobs) and what happened.

:class:`Registry` is the one entry point; the records it returns, the errors
it raises and the defaults it uses are importable from here too, so callers
(the CLI, the demo, scripts) never reach into the operations or the store.
"""

from merging.methods import DEFAULT_DENSITY
from registry.operations.examples import example_corpora, examples_dir
from registry.operations.maintenance import DEFAULT_GC_GRACE_SECONDS
from registry.operations.publishing import default_endpoint
from registry.operations.strategies import CHOICES as STRATEGY_CHOICES
from registry.operations.strategies import DEFAULT_STRATEGY, STRATEGIES, Strategy
from registry.service import Registry, database_revisions, upgrade_database
from registry.store.errors import (
    AlreadyExists,
    BlobStoreFailed,
    Conflict,
    Corrupt,
    GateRefused,
    InvalidInput,
    LLMFailed,
    MemoError,
    NotAHome,
    NotFound,
    SchemaMismatch,
)
from registry.store.migrations import memo_version
from registry.store.records import (
    BaseModelRecord,
    ChannelEventRecord,
    ChannelRecord,
    CorpusRecord,
    EvaluationRecord,
    ExecutiveEvaluationRecord,
    GcReport,
    MemberRecall,
    MergeCost,
    MergeRecord,
    PublicationRecord,
    Recall,
    ReflectionSetRecord,
    RetainOutcome,
    TaskVectorMetrics,
    TaskVectorRecord,
    TrainingCost,
    VerifyReport,
)

__all__ = [
    "database_revisions",
    "upgrade_database",
    "DEFAULT_DENSITY",
    "DEFAULT_GC_GRACE_SECONDS",
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "STRATEGY_CHOICES",
    "AlreadyExists",
    "BlobStoreFailed",
    "BaseModelRecord",
    "ChannelEventRecord",
    "ChannelRecord",
    "Conflict",
    "CorpusRecord",
    "EvaluationRecord",
    "ExecutiveEvaluationRecord",
    "MemberRecall",
    "MergeCost",
    "Recall",
    "RetainOutcome",
    "TaskVectorMetrics",
    "TrainingCost",
    "Corrupt",
    "GateRefused",
    "GcReport",
    "InvalidInput",
    "LLMFailed",
    "MemoError",
    "MergeRecord",
    "NotAHome",
    "NotFound",
    "PublicationRecord",
    "ReflectionSetRecord",
    "Registry",
    "SchemaMismatch",
    "Strategy",
    "TaskVectorRecord",
    "VerifyReport",
    "default_endpoint",
    "memo_version",
    "example_corpora",
    "examples_dir",
]
