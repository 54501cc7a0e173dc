"""memo's registry: what exists (SQL rows, content-addressed blobs) and what happened.

The public entry point is :class:`registry.service.Registry`.
"""

from registry.service import Registry
from registry.store.errors import MemoError

__all__ = ["MemoError", "Registry"]
