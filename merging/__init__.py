"""Merge math and safetensors shard streaming; knows nothing of SQL.

    from merging import MergeInput, MergeSpec, merge
"""

from merging.engine import MergeOptions, MergeResult, merge
from merging.errors import CheckpointError, MergeError
from merging.spec import METHODS, MergeInput, MergeSpec

__all__ = [
    "METHODS", "CheckpointError", "MergeError", "MergeInput", "MergeOptions", "MergeResult",
    "MergeSpec", "merge",
]
