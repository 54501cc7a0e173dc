"""Merge math and safetensors shard streaming; knows nothing of SQL.

    from merging import MergeInput, MergeSpec, merge

Names are loaded on first use, so that importing ``merging.checkpoint``
(header checks, used by every registry command) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "merge": "merging.engine",
    "MergeOptions": "merging.engine",
    "MergeResult": "merging.engine",
    "MergeError": "merging.errors",
    "CheckpointError": "merging.errors",
    "METHODS": "merging.methods",
    "MergeInput": "merging.spec",
    "MergeSpec": "merging.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'merging' has no attribute {name!r}")
