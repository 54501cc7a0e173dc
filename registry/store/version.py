"""memo's version, from the installed package's metadata (never a literal in the code)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def memo_version() -> str:
    try:
        return version("memo-registry")
    except PackageNotFoundError:
        return "unknown"
