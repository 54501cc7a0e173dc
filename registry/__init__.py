"""memo's registry: what exists (SQL rows, content-addressed blobs) and what happened.

The public entry point is :class:`registry.service.Registry`.
"""

from registry.errors import MemoError
from registry.service import Registry

__all__ = ["MemoError", "Registry"]
