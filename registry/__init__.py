"""memo's registry: what exists (SQL rows, content-addressed blobs) and what happened.

:class:`Registry` is the one entry point; the records it returns, the errors
it raises and the defaults it uses are importable from here too, so callers
(the CLI, the demo, scripts) never reach into the operations or the store.

Every name loads on first use (PEP 562), so ``import registry`` (and ``memo --help``) costs
almost nothing; importing a name loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from merging.methods import DEFAULT_DENSITY
    from registry.operations.examples import example_corpora, examples_dir
    from registry.operations.publishing import default_endpoint
    from registry.operations.replay import everyday_prompts
    from registry.operations.strategies import CHOICES as STRATEGY_CHOICES
    from registry.operations.strategies import DEFAULT_STRATEGY, STRATEGIES, Strategy
    from registry.service import Registry, database_revisions, upgrade_database
    from registry.store.config import DEFAULT_GC_GRACE_SECONDS
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
    from registry.store.export_records import GGUFExportRecord
    from registry.store.records import (
        BaseModelRecord,
        ChannelEventRecord,
        ChannelRecord,
        CorpusRecord,
        EvaluationRecord,
        ExecutiveEvaluationRecord,
        GcReport,
        GeneralKnowledge,
        MemberRecall,
        MergeCost,
        MergeRecord,
        ProbeSetRecord,
        PublicationRecord,
        Recall,
        ReflectionSetRecord,
        RetainOutcome,
        TaskVectorMetrics,
        TaskVectorRecord,
        TrainingCost,
        VerifyReport,
    )
    from registry.store.version import memo_version
    from registry.store.webhook_records import DeliveryRecord, WebhookRecord

_EXPORTS = {  # name -> (module, attribute)
    "DEFAULT_DENSITY": ("merging.methods", "DEFAULT_DENSITY"),
    "example_corpora": ("registry.operations.examples", "example_corpora"),
    "examples_dir": ("registry.operations.examples", "examples_dir"),
    "DEFAULT_GC_GRACE_SECONDS": ("registry.store.config", "DEFAULT_GC_GRACE_SECONDS"),
    "default_endpoint": ("registry.operations.publishing", "default_endpoint"),
    "everyday_prompts": ("registry.operations.replay", "everyday_prompts"),
    "STRATEGY_CHOICES": ("registry.operations.strategies", "CHOICES"),
    "DEFAULT_STRATEGY": ("registry.operations.strategies", "DEFAULT_STRATEGY"),
    "STRATEGIES": ("registry.operations.strategies", "STRATEGIES"),
    "Strategy": ("registry.operations.strategies", "Strategy"),
    "Registry": ("registry.service", "Registry"),
    "database_revisions": ("registry.service", "database_revisions"),
    "upgrade_database": ("registry.service", "upgrade_database"),
    "AlreadyExists": ("registry.store.errors", "AlreadyExists"),
    "BlobStoreFailed": ("registry.store.errors", "BlobStoreFailed"),
    "Conflict": ("registry.store.errors", "Conflict"),
    "Corrupt": ("registry.store.errors", "Corrupt"),
    "GateRefused": ("registry.store.errors", "GateRefused"),
    "InvalidInput": ("registry.store.errors", "InvalidInput"),
    "LLMFailed": ("registry.store.errors", "LLMFailed"),
    "MemoError": ("registry.store.errors", "MemoError"),
    "NotAHome": ("registry.store.errors", "NotAHome"),
    "NotFound": ("registry.store.errors", "NotFound"),
    "SchemaMismatch": ("registry.store.errors", "SchemaMismatch"),
    "memo_version": ("registry.store.version", "memo_version"),
    "BaseModelRecord": ("registry.store.records", "BaseModelRecord"),
    "ChannelEventRecord": ("registry.store.records", "ChannelEventRecord"),
    "ChannelRecord": ("registry.store.records", "ChannelRecord"),
    "CorpusRecord": ("registry.store.records", "CorpusRecord"),
    "EvaluationRecord": ("registry.store.records", "EvaluationRecord"),
    "ExecutiveEvaluationRecord": ("registry.store.records", "ExecutiveEvaluationRecord"),
    "GcReport": ("registry.store.records", "GcReport"),
    "GeneralKnowledge": ("registry.store.records", "GeneralKnowledge"),
    "ProbeSetRecord": ("registry.store.records", "ProbeSetRecord"),
    "MemberRecall": ("registry.store.records", "MemberRecall"),
    "MergeCost": ("registry.store.records", "MergeCost"),
    "MergeRecord": ("registry.store.records", "MergeRecord"),
    "PublicationRecord": ("registry.store.records", "PublicationRecord"),
    "Recall": ("registry.store.records", "Recall"),
    "ReflectionSetRecord": ("registry.store.records", "ReflectionSetRecord"),
    "RetainOutcome": ("registry.store.records", "RetainOutcome"),
    "TaskVectorMetrics": ("registry.store.records", "TaskVectorMetrics"),
    "TaskVectorRecord": ("registry.store.records", "TaskVectorRecord"),
    "TrainingCost": ("registry.store.records", "TrainingCost"),
    "VerifyReport": ("registry.store.records", "VerifyReport"),
    "DeliveryRecord": ("registry.store.webhook_records", "DeliveryRecord"),
    "GGUFExportRecord": ("registry.store.export_records", "GGUFExportRecord"),
    "WebhookRecord": ("registry.store.webhook_records", "WebhookRecord"),
}

__all__ = [
    "everyday_prompts",
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
    "DeliveryRecord",
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
    "GGUFExportRecord",
    "GeneralKnowledge",
    "InvalidInput",
    "LLMFailed",
    "MemoError",
    "MergeRecord",
    "NotAHome",
    "NotFound",
    "ProbeSetRecord",
    "PublicationRecord",
    "ReflectionSetRecord",
    "Registry",
    "SchemaMismatch",
    "Strategy",
    "TaskVectorRecord",
    "VerifyReport",
    "WebhookRecord",
    "default_endpoint",
    "memo_version",
    "example_corpora",
    "examples_dir",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # found once; later lookups skip this function
        return value
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
