"""One exception family for the registry, each with a stable code.

Every error is raised at the boundary where bad input is detected, names the
offending thing and says how to fix it; the CLI prints ``str(error)`` as one
line and exits 1.
"""

from __future__ import annotations


class MemoError(Exception):
    """Base of every error memo reports to a user."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(MemoError):
    code = "not_found"


class AlreadyExists(MemoError):
    code = "already_exists"


class Conflict(MemoError):
    """The registry's state disagrees with what was asked (e.g. a base mismatch)."""

    code = "conflict"


class Corrupt(MemoError):
    """Stored or given data fails a hash, a header or a shape check."""

    code = "corrupt"


class InvalidInput(MemoError):
    code = "invalid_input"


class NotAHome(MemoError):
    code = "not_a_home"


class SchemaMismatch(MemoError):
    """The database was migrated by a newer memo than this one."""

    code = "schema_mismatch"


class LLMFailed(MemoError):
    """An LLM endpoint (generator or executive) that cannot be reached or answers unusably."""

    code = "llm_failed"


class GateRefused(Conflict):
    """A promotion refused by a channel's retention gate (the merge itself stays recorded)."""

    code = "gate_refused"


class BlobStoreFailed(MemoError):
    """The blob store (a bucket) could not be reached, refused the request, or failed it."""

    code = "blob_store_failed"
