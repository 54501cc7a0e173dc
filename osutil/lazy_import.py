"""Modules imported on first use, so that a command that never needs torch (a listing, ``--help``)
never pays for it.

Use it with the eager import kept for type checkers and import-linter::

    if TYPE_CHECKING:
        import huggingface_hub as hub
    else:
        hub = lazy_module("huggingface_hub")
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands for a module until an attribute is asked of it; then imports it and answers from it."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(name: str) -> ModuleType:
    """``name`` (a package or a submodule), imported at the first attribute access."""
    return _Deferred(name)
